"""kill -9 of the real ``faasd`` daemon while an async and a sync invocation run: after a restart the
async one is re-queued and completes, the sync one is marked failed, and no sandbox of the dead daemon
is left."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest

from faasd.testing.leaks import runc_ids
from fixtures.daemon import Daemon, daemon_env, free_port, wait_status

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
__all__ = ["daemon_env"]  # the fixture, imported to be found by pytest


def test_kill9_during_async_then_restart_completes(daemon_env: tuple[Daemon, str], unique_id: str) -> None:
    d, image = daemon_env
    d.start()
    admin = (d.settings.data_dir / "admin.key").read_text().strip()
    h = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=d.url, headers=h, timeout=60) as c:
        r = c.post(
            "/api/v1/functions", json={"name": unique_id, "image": image, "scale": {"min": 0, "max": 1}}
        )
        assert r.status_code == 201, r.text
        r = c.post(f"/api/v1/functions/{unique_id}/invoke-async", content=b"nap-1")
        ex_id = r.json()["execution_id"]
        wait_status(c, ex_id, {"running"})
        deadline = time.monotonic() + 30
        while not runc_ids(d.settings.runc_root) and time.monotonic() < deadline:
            time.sleep(0.05)

        # A sync caller waiting behind it (max=1): its connection dies with the daemon.
        def sync_call() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"{d.url}/api/v1/functions/{unique_id}/invoke", content=b"nap-sync", headers=h, timeout=60
                )

        caller = threading.Thread(target=sync_call)
        caller.start()
        sync_ids: list[str] = []
        deadline = time.monotonic() + 30
        while not sync_ids and time.monotonic() < deadline:
            running = c.get("/api/v1/executions", params={"function": unique_id, "status": "running"}).json()
            sync_ids = [e["id"] for e in running["executions"] if e["kind"] == "sync"]
            time.sleep(0.05)
        assert sync_ids
    before = runc_ids(d.settings.runc_root)
    assert before, "the async invocation should be running in a sandbox"
    d.kill9()
    caller.join(30)
    assert runc_ids(d.settings.runc_root) == before  # the dead daemon's sandbox is left behind...

    d.port = free_port()
    d.start()  # ...and reconciliation removes it and re-queues the execution
    with httpx.Client(base_url=d.url, headers=h, timeout=60) as c:
        ex = wait_status(c, ex_id, {"succeeded", "failed", "timeout"}, timeout=90)
        assert ex["status"] == "succeeded" and ex["result"] == "echo:nap-1" and ex["attempts"] == 2
        lost = c.get(f"/api/v1/executions/{sync_ids[0]}").json()
        assert lost["status"] == "failed" and "daemon stopped" in lost["error"]
    assert not (before & runc_ids(d.settings.runc_root)), "orphaned sandbox of the killed daemon survived"
    d.stop_gracefully()
    assert runc_ids(d.settings.runc_root) == set()
