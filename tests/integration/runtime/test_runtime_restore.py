"""SandboxManager.restore: a CRIU checkpoint of a real sandbox comes back running in a new sandbox."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faasd.runtime import Sandbox, SandboxManager, SandboxSpec
from fixtures.counter import COUNTER, read_count

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]


@pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed")
async def test_checkpoint_then_restore_into_new_sandbox(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]], tmp_path: Path
) -> None:
    sb = await manager.create(make_spec("python3", "-c", COUNTER), stdin_pipe=False)
    new_id = sid + "-r"
    try:
        await sb.start()
        before = await read_count(sb.io_dir)
        image = tmp_path / "criu"
        await sb.runtime.checkpoint(sb.id, image, work_path=tmp_path / "work", leave_running=False)
        await sb.wait(10)
        dumped: dict[str, Any] = json.loads(sb.config_path.read_text())
        old_bundle = str(sb.bundle)

        def rewrite(new: Sandbox) -> dict[str, Any]:
            text = json.dumps(dumped).replace(old_bundle, "@@BUNDLE@@").replace(sb.id, new.id)
            text = text.replace("@@BUNDLE@@", str(new.bundle))
            return dict(json.loads(text))

        spec = make_spec("python3", "-c", COUNTER, id=new_id)
        restored = await manager.restore(spec, image, rewrite)
        assert restored.status == "running"
        assert (await restored.state())["status"] == "running"
        after = await read_count(restored.io_dir)
        for _ in range(250):  # the restored process keeps counting
            if await read_count(restored.io_dir) > after:
                break
            await asyncio.sleep(0.02)
        assert await read_count(restored.io_dir) > after >= 1
        assert after >= before  # continues from the dumped memory state, not a fresh start at 1
        await restored.destroy()
    finally:
        await sb.destroy()
    assert leaks_of(sid) == [] and leaks_of(new_id) == []
