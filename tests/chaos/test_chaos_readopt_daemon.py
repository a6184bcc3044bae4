"""Sandboxes outlive the daemon (issue 16): kill -9 (and a clean restart) of the real ``faasd`` daemon.

Instances keep their processes (a background counter keeps counting while no daemon runs), files and
exposed ports (same host port); restored and branched sandboxes keep serving; an instance whose sandbox
died while the daemon was down keeps its files as its next base; half-done operations (a branch of 10, a
snapshot, an upload) are finished or rolled back; warm pool workers are drained and replaced. Every
sandbox id a test saw is leak-checked at the end.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from faasd.config import Settings
from faasd.testing.leaks import find_leaks, runc_ids
from fixtures.daemon import Daemon, daemon_env, free_port

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
__all__ = ["daemon_env"]

IMAGE = "faasd/python:latest"
COUNTER = (
    "mkdir -p /srv && nohup sh -c 'echo $$ > /srv/counter.pid; i=0; while true; do i=$((i+1)); "
    "echo $i > /srv/count.tmp; mv /srv/count.tmp /srv/count; sleep 0.1; done' >/dev/null 2>&1 &"
)


@contextlib.contextmanager
def client(d: Daemon) -> Iterator[httpx.Client]:
    admin = (d.settings.data_dir / "admin.key").read_text().strip()
    with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {admin}"}, timeout=120) as c:
        yield c


def restart(d: Daemon) -> None:
    d.port = free_port()
    d.start()


def run(c: httpx.Client, inst: str, command: str) -> dict[str, Any]:
    r = c.post(f"/api/v1/instances/{inst}/exec", json={"command": command, "timeout_s": 60})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def count_on_host(settings: Settings, sandbox_id: str) -> int:
    """The counter as the host sees it in the sandbox's merged rootfs (readable with no daemon)."""
    try:
        return int((settings.sandboxes_dir / sandbox_id / "rootfs/srv/count").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def wait_count_above(settings: Settings, sandbox_id: str, value: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count_on_host(settings, sandbox_id)
        if n > value:
            return n
        time.sleep(0.1)
    raise AssertionError(f"the counter in {sandbox_id} stopped at {value}")


def new_instance(c: httpx.Client, **extra: Any) -> dict[str, Any]:
    r = c.post("/api/v1/instances", json={"image": IMAGE, **extra})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def http_get(port: int, path: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def finish(d: Daemon, ids: set[str]) -> None:
    """Stop the daemon, remove what is left in its private run_dir, then no id may have left a trace."""
    d.stop()
    import asyncio

    from faasd.runtime import reaper
    from faasd.runtime.sandbox import SandboxManager

    asyncio.run(SandboxManager(d.settings).cleanup_orphans())
    reaper.reap_orphans()
    ids.discard("")
    left = find_leaks(d.settings, sorted(ids))
    assert not left, left


# ------------------------------------------------------------------------------------------- instances
def test_chaos_readopt_instance_kill9_and_clean_restart(daemon_env: tuple[Daemon, str]) -> None:
    """(a) a background process keeps counting across kill -9 and a clean restart; files, exposed port
    (same host port), TTL and exec work after; delete leaves nothing."""
    d, _ = daemon_env
    d.start()
    with client(d) as c:
        inst = new_instance(c, ttl_s=3600)
        iid, sb_id = inst["id"], inst["sandbox_id"]
        run(c, iid, COUNTER)
        run(c, iid, "echo hello > /srv/index.html && cd /srv && "
                    "nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
        up = c.put(f"/api/v1/instances/{iid}/files", json={"target_path": "/data", "files": [
            {"path": "up.txt", "content": base64.b64encode(b"uploaded").decode()}]})
        assert up.status_code == 200, up.text
        port = c.post(f"/api/v1/instances/{iid}/ports", json={"internal_port": 8000}).json()
        host_port = port["host_port"]
        assert http_get(host_port, "/index.html").text == "hello\n"
        pid = run(c, iid, "cat /srv/counter.pid")["stdout"].strip()
    before = wait_count_above(d.settings, sb_id, 0)

    d.kill9()
    assert sb_id in runc_ids(d.settings.runc_root)
    while_down = wait_count_above(d.settings, sb_id, before)  # counts with no daemon at all

    for how in ("kill -9", "clean restart"):
        restart(d)
        with client(d) as c:
            got = c.get(f"/api/v1/instances/{iid}").json()
            assert got["status"] == "running", (how, got)
            assert got["sandbox_id"] == sb_id and got["error"] is None, (how, got)
            assert got["ports"][0]["host_port"] == host_port, (how, got)
            res = run(c, iid, f"kill -0 {pid} && cat /srv/count /data/up.txt")
            assert res["exit_code"] == 0, (how, res)
            n, uploaded = res["stdout"].split()
            assert int(n) > while_down and uploaded == "uploaded", (how, res)
            assert http_get(host_port, "/index.html").text == "hello\n", how
            while_down = wait_count_above(d.settings, sb_id, int(n))
            if how == "kill -9":
                d.stop_gracefully()  # a clean shutdown leaves the instance running too
                assert sb_id in runc_ids(d.settings.runc_root)
                while_down = wait_count_above(d.settings, sb_id, while_down)
    with client(d) as c:
        # an adopted instance can be snapshotted (CRIU) and a copy started from it, processes included
        snap = c.post("/api/v1/snapshots", json={"instance_id": iid})
        assert snap.status_code == 201, snap.text
        copy = c.post("/api/v1/instances", json={"snapshot_id": snap.json()["id"]})
        assert copy.status_code == 201, copy.text
        res = run(c, copy.json()["id"], f"kill -0 {pid} && cat /data/up.txt")
        assert res["exit_code"] == 0 and res["stdout"] == "uploaded", res
        assert c.delete(f"/api/v1/instances/{copy.json()['id']}").status_code == 204
        assert c.delete(f"/api/v1/instances/{iid}").status_code == 204
    assert sb_id not in runc_ids(d.settings.runc_root)
    finish(d, {sb_id, copy.json()["sandbox_id"]})


def test_chaos_readopt_instance_died_while_down_keeps_files(daemon_env: tuple[Daemon, str]) -> None:
    """(b) the sandbox dies while no daemon runs: its writable layer becomes the next base, the instance
    says what happened; a paused instance comes back paused."""
    d, _ = daemon_env
    d.start()
    with client(d) as c:
        dying = new_instance(c)
        paused = new_instance(c)
        idle = new_instance(c, ttl_s=4)  # its TTL clock goes on across the restart
        run(c, dying["id"], "mkdir -p /srv && echo survived > /srv/kept.txt")
        run(c, paused["id"], COUNTER)
        wait_count_above(d.settings, paused["sandbox_id"], 0)
        assert c.post(f"/api/v1/instances/{paused['id']}/pause").status_code == 200
    frozen_at = count_on_host(d.settings, paused["sandbox_id"])
    d.kill9()
    runc = ["runc", "--root", str(d.settings.runc_root)]
    subprocess.run([*runc, "kill", dying["sandbox_id"], "KILL"], check=True)
    deadline = time.monotonic() + 30
    while b'"stopped"' not in subprocess.run([*runc, "state", dying["sandbox_id"]],
                                              capture_output=True).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    restart(d)
    with client(d) as c:
        got = c.get(f"/api/v1/instances/{dying['id']}").json()
        assert got["status"] == "stopped" and got["sandbox_id"] is None, got
        assert "exited while the daemon was not running" in got["error"], got
        assert got["fs_snapshot"] and got["fs_snapshot"] in got["error"], got
        assert dying["sandbox_id"] not in runc_ids(d.settings.runc_root)
        started = c.post(f"/api/v1/instances/{dying['id']}/start")
        assert started.status_code == 200, started.text
        assert run(c, dying["id"], "cat /srv/kept.txt")["stdout"] == "survived\n"

        p = c.get(f"/api/v1/instances/{paused['id']}").json()
        assert p["status"] == "paused" and p["sandbox_id"] == paused["sandbox_id"], p
        assert count_on_host(d.settings, paused["sandbox_id"]) == frozen_at
        assert c.post(f"/api/v1/instances/{paused['id']}/resume").status_code == 200
        wait_count_above(d.settings, paused["sandbox_id"], frozen_at)

        deadline = time.monotonic() + 60
        while (i := c.get(f"/api/v1/instances/{idle['id']}").json())["status"] != "paused":
            assert time.monotonic() < deadline, i
            time.sleep(0.2)
        assert i["auto_paused"] and i["sandbox_id"] == idle["sandbox_id"], i
        assert run(c, idle["id"], "echo awake")["stdout"] == "awake\n"  # a use resumes it
        ids = {dying["sandbox_id"], paused["sandbox_id"], idle["sandbox_id"], started.json()["sandbox_id"]}
        for inst in (dying, paused, idle):
            assert c.delete(f"/api/v1/instances/{inst['id']}").status_code == 204
    finish(d, ids)


def _as_after_reboot(settings: Settings, sandbox_id: str) -> None:
    """What a host reboot does to a sandbox: its processes, runc state, cgroups, mounts, netns and the
    whole run_dir (a tmpfs) are gone; data_dir (with a loop-backed disk) stays."""
    from faasd.rootfs import mounts
    from faasd.runtime import cgroups, network, userns

    runc = ["runc", "--root", str(settings.runc_root)]
    subprocess.run([*runc, "kill", sandbox_id, "KILL"], capture_output=True)
    subprocess.run([*runc, "delete", "--force", sandbox_id], capture_output=True, check=True)
    cgroups.remove(sandbox_id)
    network.delete_netns(sandbox_id)
    userns.remove(sandbox_id)
    userns.release(sandbox_id)
    bundle = settings.sandboxes_dir / sandbox_id
    assert not mounts.unmount_all_under(bundle)
    import shutil

    shutil.rmtree(bundle)


def test_chaos_readopt_instance_disk_recovered_after_reboot(daemon_env: tuple[Daemon, str]) -> None:
    """(b) after a host reboot (run_dir gone) the instance's loop-backed disk still holds what it wrote:
    its writable layer is recovered as the next base, the disk file is removed."""
    d, _ = daemon_env
    d.start()
    with client(d) as c:
        inst = new_instance(c)  # 1 GiB disk, 512 MiB memory: a loop-backed disk in data_dir/scratch
        run(c, inst["id"], "mkdir -p /srv && echo on-disk > /srv/kept.txt && sync")
    disk = d.settings.data_dir / "scratch" / f"{inst['sandbox_id']}.scratch.img"
    assert disk.is_file()
    d.kill9()
    _as_after_reboot(d.settings, inst["sandbox_id"])
    restart(d)
    with client(d) as c:
        got = c.get(f"/api/v1/instances/{inst['id']}").json()
        assert got["status"] == "stopped" and "recovered from its disk" in got["error"], got
        assert got["fs_snapshot"] and got["fs_snapshot"] in got["error"], got
        assert not disk.exists()
        started = c.post(f"/api/v1/instances/{inst['id']}/start")
        assert started.status_code == 200, started.text
        assert run(c, inst["id"], "cat /srv/kept.txt")["stdout"] == "on-disk\n"
        assert c.delete(f"/api/v1/instances/{inst['id']}").status_code == 204
    finish(d, {inst["sandbox_id"], started.json()["sandbox_id"]})


# ------------------------------------------------------------------------------ restored and branched
def _function_snapshot(c: httpx.Client, name: str, image: str) -> str:
    r = c.post("/api/v1/functions", json={"name": name, "image": image, "scale": {"min": 1, "max": 2}})
    assert r.status_code == 201, r.text
    assert c.post(f"/api/v1/functions/{name}/invoke", content=b"warm").text == "echo:warm"
    snap = c.post("/api/v1/snapshots", json={"function": name})
    assert snap.status_code == 201, snap.text
    sid: str = snap.json()["id"]
    return sid


def test_chaos_readopt_restored_branch_and_pool(daemon_env: tuple[Daemon, str], unique_id: str) -> None:
    """(c) restored and branched sandboxes are re-adopted and keep serving; warm pool workers serving
    load are drained and replaced; a branch of 10 cut by kill -9 is rolled back (or was finished)."""
    d, image = daemon_env
    d.start()
    seen: set[str] = set()
    with client(d) as c:
        snap = _function_snapshot(c, unique_id, image)
        restored = c.post(f"/api/v1/snapshots/{snap}/restore").json()
        branch = c.post(f"/api/v1/snapshots/{snap}/branch", json={"count": 3}).json()["sandboxes"]
        kept = {restored["id"], *(b["id"] for b in branch)}
        for sid in kept:
            assert c.post(f"/api/v1/sandboxes/{sid}/invoke", content=b"x").text == "echo:x"
        workers = runc_ids(d.settings.runc_root) - kept
        assert workers, "the function's warm worker"
        seen |= kept | workers

        # load on the pool while a branch of 10 is being created, then kill -9
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{d.url}/function/{unique_id}", content=b"load", timeout=30)

        def big_branch() -> None:
            with contextlib.suppress(httpx.HTTPError):
                c2 = httpx.Client(base_url=d.url, headers=dict(c.headers), timeout=120)
                c2.post(f"/api/v1/snapshots/{snap}/branch", json={"count": 10})

        loaders = [threading.Thread(target=load) for _ in range(3)]
        brancher = threading.Thread(target=big_branch)
        for t in (*loaders, brancher):
            t.start()
        deadline = time.monotonic() + 60
        while len(runc_ids(d.settings.runc_root) - seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    during = runc_ids(d.settings.runc_root)
    d.kill9()
    stop.set()
    for t in (*loaders, brancher):
        t.join(60)
    seen |= during | runc_ids(d.settings.runc_root)

    restart(d)
    with client(d) as c:
        listed = {s["id"] for s in c.get("/api/v1/sandboxes").json()["sandboxes"]}
        assert kept <= listed, (kept, listed)
        extra = listed - kept
        assert len(extra) in (0, 10), f"a half-done branch must be finished or rolled back: {extra}"
        for sid in listed:
            r = c.post(f"/api/v1/sandboxes/{sid}/invoke", content=b"again")
            assert r.status_code == 200 and r.text == "echo:again", (sid, r.text)
        # the old pool workers were drained; a new one serves
        assert c.post(f"/api/v1/functions/{unique_id}/invoke", content=b"y").text == "echo:y"
        now = runc_ids(d.settings.runc_root)
        assert not (workers & now), "the killed daemon's pool workers must be drained"
        assert not ((seen - listed) & now), "unacknowledged branch copies must be rolled back"
        seen |= now
    # a clean restart keeps them too
    d.stop_gracefully()
    assert listed <= runc_ids(d.settings.runc_root)
    restart(d)
    with client(d) as c:
        again = {s["id"]: s for s in c.get("/api/v1/sandboxes").json()["sandboxes"]}
        assert set(again) == listed, (again, listed)
        assert again[restored["id"]]["snapshot_id"] == snap
        assert sorted(again[b["id"]]["copy_index"] for b in branch) == [0, 1, 2]
        for sid in listed:
            r = c.post(f"/api/v1/sandboxes/{sid}/invoke", content=b"more")
            assert r.status_code == 200 and r.text == "echo:more", (sid, r.text)
            assert c.delete(f"/api/v1/sandboxes/{sid}").status_code == 204
        seen |= runc_ids(d.settings.runc_root)
    finish(d, seen)


# ------------------------------------------------------------------------- half-done instance operations
def test_chaos_readopt_kill9_during_upload_then_snapshot(daemon_env: tuple[Daemon, str]) -> None:
    """An upload in flight, then a snapshot being written, when the daemon dies: after each restart the
    instance runs, acknowledged files are there, the upload is all or nothing, every listed snapshot can be
    started, and the snapshot store holds no half-written staging data."""
    d, _ = daemon_env
    d.start()
    with client(d) as c:
        inst = new_instance(c)
        iid, sb_id = inst["id"], inst["sandbox_id"]
        run(c, iid, COUNTER)
        ack = c.put(f"/api/v1/instances/{iid}/files", json={"target_path": "/acked", "files": [
            {"path": "a.txt", "content": base64.b64encode(b"acknowledged").decode()}]})
        assert ack.status_code == 200
        headers = dict(c.headers)
    size = 4_000_000  # under the API body limit (6 MiB) once base64-encoded
    merged = d.settings.sandboxes_dir / sb_id / "rootfs"

    def upload() -> None:
        body = base64.b64encode(b"z" * size).decode()
        with contextlib.suppress(httpx.HTTPError):
            httpx.put(f"{d.url}/api/v1/instances/{iid}/files", headers=headers, timeout=120,
                      json={"target_path": "/inflight", "files": [{"path": "big.txt", "content": body}]})

    def snapshot() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{d.url}/api/v1/snapshots", json={"instance_id": iid}, headers=headers, timeout=120)

    store_tmp = d.settings.snapshots_dir / "tmp"
    for phase, target, started in (
        ("upload", upload, lambda: (merged / "inflight").exists()),
        ("snapshot", snapshot, lambda: any(store_tmp.glob("ckpt-*"))),
    ):
        t = threading.Thread(target=target)
        t.start()
        deadline = time.monotonic() + 60
        while not started() and time.monotonic() < deadline:
            time.sleep(0.005)
        d.kill9()
        t.join(60)
        restart(d)
        with client(d) as c:
            got = c.get(f"/api/v1/instances/{iid}").json()
            assert got["status"] in ("running", "paused") and got["sandbox_id"] == sb_id, (phase, got)
            res = run(c, iid, "cat /acked/a.txt; ls -A /inflight 2>/dev/null; "
                              "test ! -e /inflight/big.txt || wc -c < /inflight/big.txt")
            lines = res["stdout"].split()
            assert lines[0] == "acknowledged", (phase, res)
            # all or nothing: no partial file, no staging file left behind
            assert lines[1:] in ([], ["big.txt", str(size)]), (phase, res)
            n = int(run(c, iid, "cat /srv/count")["stdout"])
            wait_count_above(d.settings, sb_id, n)
            assert not any(store_tmp.iterdir()), (phase, list(store_tmp.iterdir()))

    ids = {sb_id}
    with client(d) as c:
        for snap in c.get("/api/v1/snapshots").json()["snapshots"]:
            copy = c.post("/api/v1/instances", json={"snapshot_id": snap["id"]})
            assert copy.status_code == 201, copy.text
            ids.add(copy.json()["sandbox_id"])
            assert run(c, copy.json()["id"], "cat /acked/a.txt")["stdout"] == "acknowledged"
            assert c.delete(f"/api/v1/instances/{copy.json()['id']}").status_code == 204
        assert c.delete(f"/api/v1/instances/{iid}").status_code == 204
    finish(d, ids)


def test_chaos_readopt_stop_on_shutdown_option(
    daemon_env: tuple[Daemon, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FAASD_KEEP_SANDBOXES_ON_SHUTDOWN=false``: a clean shutdown stops instances, keeping their files."""
    monkeypatch.setenv("FAASD_KEEP_SANDBOXES_ON_SHUTDOWN", "false")
    d, _ = daemon_env
    d.start()
    with client(d) as c:
        inst = new_instance(c)
        run(c, inst["id"], "echo stays > /kept.txt")
    d.stop_gracefully()
    assert inst["sandbox_id"] not in runc_ids(d.settings.runc_root)
    restart(d)
    with client(d) as c:
        got = c.get(f"/api/v1/instances/{inst['id']}").json()
        assert got["status"] == "stopped" and got["fs_snapshot"], got
        start = c.post(f"/api/v1/instances/{inst['id']}/start").json()
        assert run(c, inst["id"], "cat /kept.txt")["stdout"] == "stays\n"
        assert c.delete(f"/api/v1/instances/{inst['id']}").status_code == 204
    finish(d, {inst["sandbox_id"], start["sandbox_id"]})

