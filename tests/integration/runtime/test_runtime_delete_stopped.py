"""A sandbox whose program has exited is deleted without a ``runc delete`` process, and runc agrees it is
gone; one still running when destroyed is killed first and deleted the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from faasd.runtime import SandboxManager, SandboxSpec, cgroups
from faasd.runtime.runc import ContainerNotFound, OciRuntime

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]


@pytest.fixture
def runc_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = OciRuntime.call

    async def call(self: OciRuntime, args: Sequence[str], *a: Any, **kw: Any) -> Any:
        calls.append(list(args))
        return await real(self, args, *a, **kw)

    monkeypatch.setattr(OciRuntime, "call", call)
    return calls


@pytest.mark.parametrize("program", ["exited", "running"])
async def test_a_stopped_sandbox_is_deleted_without_runc(
    manager: SandboxManager,
    make_spec: Spec,
    no_leaks: Callable[[], None],
    runc_calls: list[list[str]],
    program: str,
) -> None:
    code = (
        "print('done')" if program == "exited" else "import time; print('done', flush=True); time.sleep(600)"
    )
    sb = await manager.create(make_spec("python3", "-c", code), stdin_pipe=False)
    try:
        await sb.start()
        if program == "exited":
            assert (await sb.wait(30)).exit_code == 0
        else:
            for _ in range(3000):
                if sb.stdout() == b"done\n":
                    break
                await asyncio.sleep(0.01)
            assert sb.stdout() == b"done\n"
        state_dir = sb.runtime.root / sb.id
        assert (state_dir / "state.json").exists() and cgroups.dirs(sb.id)
    finally:
        await sb.destroy()
    assert not any("delete" in args for args in runc_calls)
    assert not state_dir.exists() and cgroups.dirs(sb.id) == []
    with pytest.raises(ContainerNotFound):
        await sb.runtime.state(sb.id)
    assert sb.id not in {c["id"] for c in await sb.runtime.list()}
    no_leaks()
