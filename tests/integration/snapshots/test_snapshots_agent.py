"""Real agent in a real sandbox: restore tells it it was restored, so copies reseed `random`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.agent_client import AgentClient, InvokeRequest
from faasd.runtime.agent_files import agent_mount, python_agent_args
from faasd.runtime.restore import Restored
from faasd.snapshots.service import branch, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HANDLER = """
import random
STATE = {"n": 0}

def handle(event, context):
    STATE["n"] += 1
    return f"{STATE['n']} {random.random()}"
"""


async def test_agent_restored_frame_reseeds_copies(
    settings: Settings, unique_id: str, python_rootfs: Path, tmp_path: Path, no_leaks: list[str]
) -> None:
    code = tmp_path / "code"
    (code / "function").mkdir(parents=True)
    (code / "function" / "main.py").write_text(HANDLER)
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)
    spec = SandboxSpec(
        id=f"fd-{unique_id}-ag",
        lowers=[python_rootfs, code],
        args=python_agent_args("main:handle"),
        mounts=[agent_mount()],
        limits=Limits(memory_mb=128, disk_mb=32, timeout_s=None),
    )
    copies: list[Restored] = []
    copy_ids = [f"fd-{unique_id}-c{i}" for i in range(3)]
    no_leaks += [spec.id, *copy_ids]
    sb = await manager.create(spec, stdin_pipe=False)
    try:
        await sb.start()
        client = AgentClient(sb.io_dir / "agent.sock")
        await client.wait_ready(20)
        first = await client.invoke(InvokeRequest(body=b"{}"))
        assert first.body.split()[0] == b"1", first
        snap = await snapshot_sandbox(store, sb)
        copies = await branch(store, snap.id, copy_ids, manager=manager)
        results = []
        for c in copies:
            assert c.agent_ack is not None and c.agent_ack.get("of") == "restored", c.agent_ack
            assert manager.get(c.sandbox.id) is c.sandbox
            res = await AgentClient(c.sandbox.io_dir / "agent.sock").invoke(InvokeRequest(body=b"{}"))
            results.append(res.body.decode().split())
        # memory carried over (the counter continues at 2 in every copy) ...
        assert [r[0] for r in results] == ["2", "2", "2"], results
        # ... but the random streams differ, because the agent reseeded after the restore
        assert len({r[1] for r in results}) == 3, results
        # the source sandbox is unaffected and keeps its own state
        again = await client.invoke(InvokeRequest(body=b"{}"))
        assert again.body.split()[0] == b"2"
    finally:
        for c in copies:
            await c.sandbox.destroy()
        await asyncio.shield(sb.destroy())
