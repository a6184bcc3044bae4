"""The hardened backend: the same SandboxManager interface on gVisor (runsc), when it is installed."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from faasd.errors import InvalidInputError, RuntimeFailure
from faasd.runtime import NetworkSpec, SandboxManager, SandboxSpec

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]
needs_runsc = pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc (gVisor) is not installed")


@needs_runsc
async def test_runsc_runs_in_gvisor(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    code = "import os, sys; print(os.uname().release); print(sys.stdin.read()); sys.exit(4)"
    res = await manager.run(make_spec("python3", "-c", code, runtime="runsc"), stdin=b"in", timeout_s=60)
    assert res.exit_code == 4, res.stderr
    release, echoed = res.stdout.decode().split()
    assert release == "4.4.0"  # gVisor's sentry reports its own kernel version, not the host's
    assert echoed == "in"
    no_leaks()


@needs_runsc
async def test_runsc_timeout_and_destroy(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    res = await manager.run(make_spec("sleep", "60", runtime="runsc"), timeout_s=1.0)
    assert res.timed_out and res.exit_code == 137
    no_leaks()


async def test_runsc_refuses_network_modes(manager: SandboxManager, make_spec: Spec) -> None:
    with pytest.raises(InvalidInputError, match="runsc"):
        await manager.create(make_spec("true", runtime="runsc", network=NetworkSpec(mode="egress")))


async def test_runsc_missing_is_a_clear_error(
    manager: SandboxManager, make_spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager.settings, "runsc_binary", "/nonexistent/runsc")
    with pytest.raises(RuntimeFailure, match="runsc is not installed"):
        await manager.create(make_spec("true", runtime="runsc"))
