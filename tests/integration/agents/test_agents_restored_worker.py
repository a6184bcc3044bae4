"""Worker.attach on sandboxes restored from a CRIU checkpoint: memory carried over, PRNGs reseeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faasd.runtime import Limits, SandboxManager
from faasd.runtime.checkpoint import checkpoint
from faasd.runtime.restore import SnapshotDirs, restore
from faasd.runtime.workers import InvokeRequest, Worker, WorkerSpec, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HANDLER = """
import random
import faasd_runtime

STATE = {"n": 0, "restores": 0}

@faasd_runtime.register_after_restore
def count_restore():
    STATE["restores"] += 1

def handle(event, context):
    STATE["n"] += 1
    return {"n": STATE["n"], "r": random.random(), "restores": STATE["restores"]}
"""


@pytest.mark.parametrize("fork", [False, True])
async def test_attach_restored_copies(
    fork: bool,
    manager: SandboxManager,
    python_rootfs: Path,
    code_layer,
    tmp_path: Path,
    unique_id: str,
    leaks,
) -> None:
    layer = code_layer({"function/handler.py": HANDLER})
    spec = WorkerSpec(
        function="restore-me",
        fork_per_request=fork,
        lowers=[python_rootfs, layer],
        limits=Limits(memory_mb=128, disk_mb=32, timeout_s=None),
    )
    source = await start_worker(manager, spec)
    copies: list[Worker] = []
    try:
        assert json.loads((await source.invoke(InvokeRequest())).body)["n"] == 1
        cp = await checkpoint(source.sandbox, tmp_path / "cp")
        dirs = SnapshotDirs(
            criu=cp.criu, config_json=cp.bundle / "config.json", lowers=[*cp.lowers, cp.upper]
        )
        for i, notify in enumerate([False, False, True, True]):
            res = await restore(manager, dirs, f"fd-{unique_id}-r{i}", notify_agent=False, limits=spec.limits)
            copies.append(await Worker.attach(res.sandbox, spec, restored=notify))
        results = [json.loads((await w.invoke(InvokeRequest())).body) for w in copies]
        # memory of the source carried over (in fork mode each request starts from the zygote's state)
        assert [r["n"] for r in results] == ([1] * 4 if fork else [2] * 4)
        assert [r["restores"] for r in results] == [0, 0, 1, 1]
        # without the `restored` frame every copy replays the same random stream ...
        assert results[0]["r"] == results[1]["r"]
        # ... with it, each copy reseeded from the kernel
        assert len({results[0]["r"], results[2]["r"], results[3]["r"]}) == 3
        assert all(w.alive for w in copies)
        assert json.loads((await source.invoke(InvokeRequest())).body)["n"] == (1 if fork else 2)
    finally:
        for w in copies:
            await w.close()
        await source.close()
    for w in [*copies, source]:
        assert leaks(w.id) == []
