"""A real ``faasd`` daemon process on a dynamic port: HTTP API end to end, crash recovery (kill -9)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faasd.config import Settings
from faasd.testing.leaks import runc_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANDLER = """\
import os, time

def handle(event, context=None):
    body = event.body.decode() if hasattr(event, "body") else str(event)
    print("got", body)
    if body.startswith("nap"):
        time.sleep(4)
    return "echo:" + body
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faasd.daemon",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.settings.data_dir),
                "--run-dir",
                str(self.settings.run_dir),
                "--cache-dir",
                str(self.settings.cache_dir),
                "--base-images",
                "python",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FAASD_LOG_LEVEL": "INFO"},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("daemon did not become healthy in time")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop_gracefully(self) -> None:
        """SIGTERM; uvicorn shuts down (lifespan closes pools) and re-raises the signal, so -15 is normal."""
        code = self.stop()
        assert code in (0, -signal.SIGTERM), (
            f"daemon exited with {code}:\n{self.log_path.read_text()[-3000:]}"
        )
        assert "Application shutdown complete" in self.log_path.read_text()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9


@pytest.fixture
def daemon_env(settings: Settings, unique_id: str, tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    from faasd.images.base import ensure_base_images
    from faasd.images.store import ImageStore

    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    src = tmp_path / "src"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER)
    store.add_layer("faasd/python:latest", src, ref=f"{unique_id}:1")
    d = Daemon(settings, tmp_path / "daemon.log")
    try:
        yield d, f"{unique_id}:1"
    finally:
        d.stop()
        # Whatever happened, remove what the test's daemons left (only this test's private run_dir).
        import asyncio

        from faasd.runtime.sandbox import SandboxManager

        asyncio.run(SandboxManager(settings).cleanup_orphans())


def wait_status(c: httpx.Client, ex_id: str, want: set[str], timeout: float = 60) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ex = c.get(f"/api/v1/executions/{ex_id}").json()
        if ex["status"] in want:
            return ex  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"execution {ex_id} never reached {want}: {ex}")


def test_http_api_end_to_end(daemon_env: tuple[Daemon, str], unique_id: str) -> None:
    d, image = daemon_env
    d.start()
    key_file = d.settings.data_dir / "admin.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    admin = key_file.read_text().strip()
    anon = httpx.get(d.url + "/api/v1/functions")
    assert anon.status_code == 401 and anon.json()["error"] == "unauthorized"

    got: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("content-length", "0"))
            got.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        basic = base64.b64encode(f"admin:{admin}".encode()).decode()
        with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as c:
            # faas-cli style deploy (Basic auth) with annotations selecting the python runtime
            r = c.post(
                "/system/functions",
                headers={"Authorization": f"Basic {basic}"},
                json={
                    "service": unique_id,
                    "image": image,
                    "annotations": {"faasd.runtime": "python"},
                    "labels": {"com.openfaas.scale.min": "1"},
                    "envVars": {"A": "1"},
                },
            )
            assert r.status_code == 202, r.text
            r = c.post(f"/function/{unique_id}", content=b"hello")
            assert r.status_code == 200 and r.content == b"echo:hello", r.text
            r = c.post(f"/api/v1/functions/{unique_id}/invoke", content=b"native")
            assert r.status_code == 200 and r.content == b"echo:native"
            assert r.headers["x-cold-start"] == "false"  # min=1 pre-warmed the pool
            cb = f"http://127.0.0.1:{srv.server_address[1]}/done"
            r = c.post(f"/async-function/{unique_id}", content=b"bg", headers={"X-Callback-Url": cb})
            assert r.status_code == 202
            ex = wait_status(c, r.headers["x-call-id"], {"succeeded", "failed"})
            assert ex["status"] == "succeeded" and ex["result"] == "echo:bg"
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got and got[0][1] == b"echo:bg" and got[0][0]["x-call-id"] == ex["id"]
            with c.stream("POST", f"/api/v1/functions/{unique_id}/invoke-stream", content=b"s") as sr:
                text = "".join(sr.iter_text())
            assert "event: result" in text and "echo:s" in text
            logs = c.get("/system/logs", params={"name": unique_id, "tail": 100}).text.splitlines()
            assert any(json.loads(ln)["text"] == "got hello" for ln in logs)
            # follow: history first, then lines of new invocations as they happen
            seen: list[str] = []
            with c.stream(
                "GET", "/system/logs", params={"name": unique_id, "tail": 1, "follow": "true"}
            ) as fr:
                lines = fr.iter_lines()
                seen.append(json.loads(next(lines))["text"])
                t = threading.Thread(target=lambda: c.post(f"/function/{unique_id}", content=b"followed"))
                t.start()
                for ln in lines:
                    seen.append(json.loads(ln)["text"])
                    if seen[-1] == "got followed":
                        break
                t.join(30)
            assert seen[-1] == "got followed" and len(seen) >= 2
            r = c.post(f"/api/v1/functions/{unique_id}/scale", json={"replicas": 2})
            assert r.json()["replicas"] == 2
            r = c.post("/api/v1/execute", json={"code": "print(1+1)", "language": "python"})
            assert r.status_code == 200 and r.json()["stdout"] == "2\n"
            metrics = c.get("/metrics").text
            assert f'faasd_invocations_total{{function="{unique_id}",status="succeeded"}}' in metrics
            assert (
                c.request("DELETE", "/system/functions", json={"functionName": unique_id}).status_code == 202
            )
            assert c.get(f"/system/function/{unique_id}").status_code == 404
    finally:
        srv.shutdown()
    d.stop_gracefully()
    assert runc_ids(d.settings.runc_root) == set()


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
