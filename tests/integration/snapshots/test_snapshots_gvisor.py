"""Real runsc: gVisor's own checkpoint/restore of a sandbox through the snapshot layer.

A counting Python process under gVisor writes a file, is snapshotted (the sandbox stops: runsc cannot
leave it running), restored and branched under runsc: the counter continues from its memory and the
file is there. A gVisor snapshot asked for under runc, a CRIU snapshot under gVisor, and a
leave-running gVisor checkpoint are refused with ``isolation_unsupported`` before anything is created.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import IsolationUnsupportedError
from faasd.runtime import Limits, NetworkSpec, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import branch, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PROG = r"""
import time
with open("/root/before.txt", "w") as f:
    f.write("written under gvisor\n")
n = 0
while True:
    n += 1
    print(n, flush=True)
    time.sleep(0.05)
"""


def counts(out: bytes) -> list[int]:
    return [int(x) for x in out.split() if x.isdigit()]


@pytest.fixture
async def env(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str]
) -> AsyncIterator[dict]:  # type: ignore[type-arg]
    if shutil.which(settings.runsc_binary) is None:
        pytest.skip("runsc (gVisor) is not installed")
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)

    def new_id(tag: str) -> str:
        sid = f"fd-{unique_id}-{tag}"
        no_leaks.append(sid)
        return sid

    yield {"manager": manager, "store": store, "new_id": new_id, "rootfs": python_rootfs}
    for sb in list(manager._sandboxes.values()):
        await sb.destroy()


async def start(env: dict, runtime: str = "runsc") -> Sandbox:  # type: ignore[type-arg]
    spec = SandboxSpec(
        id=env["new_id"]("src" if runtime == "runsc" else "runc"),
        lowers=[env["rootfs"]],
        args=["python3", "-u", "-c", PROG],
        limits=Limits(memory_mb=256, disk_mb=64, timeout_s=None),
        network=NetworkSpec(mode="none"),
        runtime=runtime,  # type: ignore[arg-type]
    )
    sb = await env["manager"].create(spec, stdin_pipe=False)
    await sb.start()
    await wait_count(sb, 5)
    return sb


async def wait_count(sb: Sandbox, at_least: int, after: int = 0) -> list[int]:
    for _ in range(600):
        seen = [n for n in counts(sb.stdout()) if n > after]
        if len(seen) >= at_least:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandbox {sb.id} printed only {sb.stdout()[-200:]!r}")


async def test_gvisor_snapshot_restores_memory_and_files_under_runsc(env: dict) -> None:  # type: ignore[type-arg]
    src = await start(env)
    with pytest.raises(IsolationUnsupportedError, match="leave-running"):
        await snapshot_sandbox(env["store"], src, leave_running=True)
    assert (await src.runtime.state(src.id))["status"] == "running"  # refused before touching it
    snap = await snapshot_sandbox(env["store"], src, leave_running=False)
    assert snap.meta.extra["isolation"] == "gvisor"
    assert (await src.runtime.state(src.id))["status"] == "stopped"  # runsc checkpoint stops it
    last = max(counts(src.stdout()))
    await src.destroy()

    restored = await restore_snapshot(env["store"], snap.id, env["new_id"]("r1"), manager=env["manager"])
    sb = restored.sandbox
    assert sb.runtime.name == "runsc"
    seen = await wait_count(sb, 3)
    # the counter lives in the process' memory: it continues right after the checkpointed value
    assert last + 1 <= seen[0] <= last + 2, (last, seen[:5])
    r = await sb.exec(["cat", "/root/before.txt"])
    assert r.exit_code == 0 and r.stdout == b"written under gvisor\n"
    r = await sb.exec(["cat", "/proc/version"])
    assert b"Linux version 4.4.0" in r.stdout  # gVisor's sentry, not the host kernel

    # snapshot of the restored sandbox, then two copies of it
    snap2 = await snapshot_sandbox(env["store"], sb, leave_running=False)
    assert snap2.meta.parent == snap.id
    last2 = max(counts(sb.stdout()))
    await sb.destroy()
    copies = await branch(
        env["store"], snap2.id, [env["new_id"]("b0"), env["new_id"]("b1")], manager=env["manager"]
    )
    for c in copies:
        got = await wait_count(c.sandbox, 2)
        assert last2 + 1 <= got[0] <= last2 + 2, (last2, got[:5])
        r = await c.sandbox.exec(["cat", "/root/before.txt"])
        assert r.stdout == b"written under gvisor\n"
        await c.sandbox.destroy()


async def test_snapshot_isolation_mismatch_is_400_and_creates_nothing(env: dict) -> None:  # type: ignore[type-arg]
    src = await start(env)
    snap = await snapshot_sandbox(env["store"], src, leave_running=False)
    await src.destroy()
    runc_id = env["new_id"]("never-runc")
    with pytest.raises(IsolationUnsupportedError, match=r"gVisor.*only be restored with isolation 'gvisor'"):
        await restore_snapshot(env["store"], snap.id, runc_id, manager=env["manager"], isolation="runc")
    assert env["manager"].get(runc_id) is None
    assert not (env["manager"].sandboxes_dir / runc_id).exists()

    crsrc = await start(env, runtime="runc")
    criu = await snapshot_sandbox(env["store"], crsrc, leave_running=True)
    await crsrc.destroy()
    assert criu.meta.extra["isolation"] == "runc"
    gv_id = env["new_id"]("never-gvisor")
    with pytest.raises(IsolationUnsupportedError, match="CRIU process image"):
        await restore_snapshot(env["store"], criu.id, gv_id, manager=env["manager"], isolation="gvisor")
    assert env["manager"].get(gv_id) is None
