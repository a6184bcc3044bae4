"""``isolation: "gvisor"``: functions, instances and one-off executes really run inside gVisor (their kernel
is gVisor's sentry, not the host's), and what cannot work there is a clear 400 ``isolation_unsupported``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from security_api_env import Env, api_env

from faasd.config import Settings

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc (gVisor) is not installed"),
]

HANDLER = (
    "import subprocess\n"
    "def handle(event, context=None):\n"
    "    return subprocess.run(['sh', '-c', 'cat /proc/version; dmesg | head -n 3'], capture_output=True,"
    " text=True).stdout\n"
)
PROBE = "cat /proc/version; dmesg 2>/dev/null | head -n 3"
"""gVisor's sentry answers /proc/version with its own fake kernel and dmesg with its boot banner."""


def host_version() -> str:
    return Path("/proc/version").read_text()


def assert_gvisor(out: str) -> None:
    assert host_version().strip() not in out, out
    assert "gVisor" in out or "Linux version 4.4.0" in out, out


def assert_host_kernel(out: str) -> None:
    assert host_version().split()[2] in out, out  # the host's release, e.g. 6.18.x


@pytest.fixture
async def env(settings: Settings, tmp_path: Path, unique_id: str) -> AsyncIterator[Env]:
    async with api_env(settings, tmp_path, f"{unique_id}:1", HANDLER) as e:
        yield e


async def test_execute_under_gvisor_runs_in_gvisor(env: Env) -> None:
    r = await env.client.post("/api/v1/execute", json={"command": PROBE, "isolation": "gvisor"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["isolation"] == "gvisor" and out["exit_code"] == 0
    assert_gvisor(out["stdout"])
    plain = (await env.client.post("/api/v1/execute", json={"command": PROBE})).json()
    assert plain["isolation"] == "runc"
    assert_host_kernel(plain["stdout"])


async def test_execute_fork_bomb_under_gvisor_is_pids_exhausted(env: Env) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    req = {"code": bomb, "language": "python", "isolation": "gvisor", "pids": 64, "timeout_ms": 60_000}
    r = await env.client.post("/api/v1/execute", json=req)
    assert r.status_code == 422 and r.json()["error"] == "pids_exhausted", r.text


async def test_function_under_gvisor_runs_in_gvisor(env: Env, unique_id: str) -> None:
    fn = {
        "name": unique_id,
        "image": f"{unique_id}:1",
        "runtime": "exec",
        "command": ["sh", "-c", PROBE],
        "isolation": "gvisor",
    }
    r = await env.client.post("/api/v1/functions", json=fn)
    assert r.status_code == 201, r.text
    assert r.json()["isolation"] == "gvisor"
    assert (await env.client.get(f"/api/v1/functions/{unique_id}")).json()["isolation"] == "gvisor"
    r = await env.client.post(f"/api/v1/functions/{unique_id}/invoke", content=b"")
    assert r.status_code == 200, r.text
    assert_gvisor(r.text)
    # the worker is warm: a second request runs in the same gVisor sandbox
    r = await env.client.post(f"/api/v1/functions/{unique_id}/invoke", content=b"")
    assert r.status_code == 200 and r.headers["x-cold-start"] == "false"
    assert_gvisor(r.text)
    # a snapshot of a gVisor worker cannot be taken: gVisor's checkpoint would stop the worker
    snap = await env.client.post("/api/v1/snapshots", json={"function": unique_id})
    assert snap.status_code == 400 and snap.json()["error"] == "isolation_unsupported", snap.text


async def test_python_function_under_gvisor_runs_in_gvisor(env: Env, unique_id: str) -> None:
    fn = {"name": unique_id, "image": f"{unique_id}:1", "isolation": "gvisor"}
    r = await env.client.post("/api/v1/functions", json=fn)
    assert r.status_code == 201 and r.json()["isolation"] == "gvisor", r.text
    for _ in range(2):  # cold, then warm on the same gVisor sandbox
        r = await env.client.post(f"/api/v1/functions/{unique_id}/invoke", content=b"")
        assert r.status_code == 200, r.text
        assert_gvisor(r.text)
    assert r.headers["x-cold-start"] == "false"


async def test_instance_under_gvisor_runs_in_gvisor(env: Env) -> None:
    r = await env.client.post("/api/v1/instances", json={"isolation": "gvisor", "memory_mb": 256})
    assert r.status_code == 201, r.text
    inst = r.json()
    iid = inst["id"]
    try:
        assert inst["isolation"] == "gvisor"
        r = await env.client.post(f"/api/v1/instances/{iid}/exec", json={"command": PROBE})
        assert r.status_code == 200, r.text
        assert_gvisor(r.json()["stdout"])
        # files survive a stop/start (filesystem-only snapshot of the overlay upper, no CRIU)
        r = await env.client.post(f"/api/v1/instances/{iid}/exec", json={"command": "echo kept > /root/f"})
        assert r.json()["exit_code"] == 0, r.text
        assert (await env.client.post(f"/api/v1/instances/{iid}/stop")).status_code == 200
        assert (await env.client.post(f"/api/v1/instances/{iid}/start")).status_code == 200
        r = await env.client.post(f"/api/v1/instances/{iid}/exec", json={"command": ["cat", "/root/f"]})
        assert r.json()["stdout"] == "kept\n", r.text
        port = await env.client.post(f"/api/v1/instances/{iid}/ports", json={"internal_port": 8000})
        assert port.status_code == 400 and port.json()["error"] == "isolation_unsupported", port.text
    finally:
        await env.client.delete(f"/api/v1/instances/{iid}")


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"runtime": "http", "command": ["python3", "-m", "http.server"]}, "runtime"),
        ({"runtime": "node"}, "runtime"),
        ({"runtime": "exec", "command": ["cat"], "network": "egress"}, "network"),
        ({"runtime": "exec", "command": ["cat"], "mode": "checkpointed"}, "mode"),
    ],
    ids=["http", "node", "egress", "checkpointed"],
)
async def test_function_combinations_gvisor_cannot_do_are_400(
    env: Env, unique_id: str, extra: dict[str, object], why: str
) -> None:
    fn = {"name": unique_id, "image": f"{unique_id}:1", "isolation": "gvisor", **extra}
    r = await env.client.post("/api/v1/functions", json=fn)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "isolation_unsupported" and why in body["details"], body
    assert (await env.client.get(f"/api/v1/functions/{unique_id}")).status_code == 404


async def test_daemon_default_isolation_applies_and_is_shown(env: Env, unique_id: str) -> None:
    fn = {"name": unique_id, "image": f"{unique_id}:1", "runtime": "exec", "command": ["sh", "-c", PROBE]}
    r = await env.client.post("/api/v1/functions", json=fn)
    assert r.status_code == 201 and r.json()["isolation"] == "runc", r.text
    env.platform.functions.default_isolation = "gvisor"
    env.settings.isolation = "gvisor"
    r = await env.client.put(f"/api/v1/functions/{unique_id}", json=fn)
    assert r.status_code == 200 and r.json()["isolation"] == "gvisor", r.text
    r = await env.client.post(f"/api/v1/functions/{unique_id}/invoke", content=b"")
    assert r.status_code == 200, r.text
    assert_gvisor(r.text)
    ex = (await env.client.post("/api/v1/execute", json={"command": PROBE})).json()
    assert ex["isolation"] == "gvisor"
    assert_gvisor(ex["stdout"])


async def _snapshot_job(env: Env, container_id: str) -> httpx.Response:
    body = {"type": "create_snapshot", "args": {"container_id": container_id}}
    return await env.client.post("/api/v1/jobs", json=body)


COUNTER = (
    "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/count; sleep 0.1; done' >/dev/null 2>&1 &"
)
"""A process whose state lives only in its memory (``i``): after a restore it continues from there."""


async def _exec(env: Env, iid: str, command: str | list[str]) -> dict:  # type: ignore[type-arg]
    r = await env.client.post(f"/api/v1/instances/{iid}/exec", json={"command": command})
    assert r.status_code == 200, r.text
    out: dict = r.json()  # type: ignore[type-arg]
    return out


async def _count(env: Env, iid: str, above: int = 0) -> int:
    for _ in range(200):
        out = (await _exec(env, iid, "cat /root/count 2>/dev/null || echo 0"))["stdout"].strip()
        if out.isdigit() and int(out) > above:
            return int(out)
        await asyncio.sleep(0.1)
    raise AssertionError(f"counter of {iid} did not go above {above}")


async def test_gvisor_instance_snapshot_restores_under_gvisor_only(env: Env) -> None:
    r = await env.client.post("/api/v1/instances", json={"isolation": "gvisor", "memory_mb": 256})
    assert r.status_code == 201, r.text
    gv = r.json()["id"]
    r = await env.client.post("/api/v1/instances", json={"memory_mb": 256})
    assert r.status_code == 201 and r.json()["isolation"] == "runc", r.text
    rc = r.json()["id"]
    made = [gv, rc]
    try:
        assert (await _exec(env, gv, "echo kept > /root/f"))["exit_code"] == 0
        await _exec(env, gv, COUNTER)
        before = await _count(env, gv, 3)
        # gVisor's own checkpoint: the instance keeps running (restored from the snapshot just taken)
        job = await _snapshot_job(env, gv)
        assert job.status_code == 200, job.text
        snap = job.json()["result"]["snapshot_id"]
        info = (await env.client.get(f"/api/v1/instances/{gv}")).json()
        assert info["status"] == "running", info
        assert await _count(env, gv, before) > before  # the counting process survived, memory intact
        assert_gvisor((await _exec(env, gv, PROBE))["stdout"])
        # a new instance from the gVisor snapshot (isolation defaults to the snapshot's)
        r = await env.client.post("/api/v1/instances", json={"snapshot_id": snap})
        assert r.status_code == 201 and r.json()["isolation"] == "gvisor", r.text
        made.append(r.json()["id"])
        copy = r.json()["id"]
        assert (await _exec(env, copy, ["cat", "/root/f"]))["stdout"] == "kept\n"
        assert await _count(env, copy, before) > before  # continues from memory, not from 1
        assert_gvisor((await _exec(env, copy, PROBE))["stdout"])
        # ... but not under runc: a gVisor image is not a CRIU image
        r = await env.client.post("/api/v1/instances", json={"snapshot_id": snap, "isolation": "runc"})
        assert r.status_code == 400 and r.json()["error"] == "isolation_unsupported", r.text
        assert "gVisor" in r.json()["message"]
        # and a CRIU snapshot of a runc instance cannot be restored under gVisor
        job = await _snapshot_job(env, rc)
        assert job.status_code == 200, job.text
        criu = job.json()["result"]["snapshot_id"]
        r = await env.client.post("/api/v1/instances", json={"snapshot_id": criu, "isolation": "gvisor"})
        assert r.status_code == 400 and r.json()["error"] == "isolation_unsupported", r.text
        assert "CRIU" in r.json()["message"]
        assert len((await env.client.get("/api/v1/instances")).json()["instances"]) == 3
        # the continued instance's later files and its snapshot's survive a stop/start (lineage kept)
        assert (await _exec(env, gv, "echo after > /root/g"))["exit_code"] == 0
        assert (await env.client.post(f"/api/v1/instances/{gv}/stop")).status_code == 200
        assert (await env.client.post(f"/api/v1/instances/{gv}/start")).status_code == 200
        assert (await _exec(env, gv, "cat /root/f /root/g"))["stdout"] == "kept\nafter\n"
    finally:
        for iid in made:
            await env.client.delete(f"/api/v1/instances/{iid}")
