"""Seeded restores with the real agents (Python in-process and fork mode, Node): copy k of a branch
with seed s reseeds its PRNGs from (s, k) -- the same branch repeats exactly, copies differ, no seed
differs from run to run."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager
from faasd.runtime.agent_client import AgentClient, InvokeRequest
from faasd.runtime.workers import WorkerSpec
from faasd.snapshots.service import branch, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore
from faasd.testing.leaks import sandbox_leaks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PY = """
import random
def handle(event, context):
    return " ".join(str(random.random()) for _ in range(3))
"""
NODE = """
module.exports = async () => [Math.random(), Math.random(), Math.random()].join(' ');
"""


@pytest.mark.parametrize("kind", ["python", "python-fork", "node"])
async def test_seeded_branch_repeats(
    kind: str,
    workers: Callable[..., object],
    manager: SandboxManager,
    settings: Settings,
    python_rootfs: Path,
    node_rootfs: Path,
    code_layer: Callable[..., Path],
) -> None:
    if kind == "node":
        spec = WorkerSpec(
            function="seeded", mode="node", lowers=[node_rootfs, code_layer({"function/handler.js": NODE})],
            limits=Limits(memory_mb=128, timeout_s=None),
        )
    else:
        spec = WorkerSpec(
            function="seeded", mode="python", lowers=[python_rootfs, code_layer({"function/handler.py": PY})],
            fork_per_request=kind == "python-fork", limits=Limits(memory_mb=128, timeout_s=None),
        )
    w = await workers(spec)  # type: ignore[operator]
    await w.invoke(InvokeRequest())  # type: ignore[attr-defined]
    store = SnapshotStore(settings)
    snap = await snapshot_sandbox(store, w.sandbox)  # type: ignore[attr-defined]
    created: list[str] = []

    async def run(seed: int | None) -> list[list[str]]:
        ids = [f"fd-seed{secrets.token_hex(4)}-{k}" for k in range(2)]
        created.extend(ids)
        copies = await branch(store, snap.id, ids, manager=manager, seed=seed)
        try:
            out = []
            for c in copies:
                assert c.agent_ack is not None and c.agent_ack.get("of") == "restored"
                client = AgentClient(c.sandbox.io_dir / "agent.sock")
                # two requests per copy: in fork mode each runs in its own child
                out.append([(await client.invoke(InvokeRequest())).body.decode() for _ in range(2)])
            return out
        finally:
            for c in copies:
                await c.sandbox.destroy()

    try:
        first, again = await run(7), await run(7)
        assert first == again  # the same seed repeats every copy's random sequence exactly
        assert first[0] != first[1]  # copy 0 and copy 1 differ
        assert first[0][0] != first[0][1]  # and successive requests are not the same numbers
        other, plain, plain2 = await run(8), await run(None), await run(None)
        assert other[0] != first[0] and plain[0] != plain2[0] and plain[0] != plain[1]
    finally:
        for sid in created:
            assert sandbox_leaks(settings, sid) == []
