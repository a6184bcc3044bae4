"""Starting a created runc container through its exec FIFO: runc sees it running, a second start is runc's
own error (the fallback), and a container killed before its start fails instead of hanging."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from faasd.errors import RuntimeFailure
from faasd.runtime import SandboxManager, SandboxSpec, execfifo

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]


async def test_started_through_the_fifo_runc_sees_it_running(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    sb = await manager.create(make_spec("python3", "-c", "import sys; sys.stdin.read(); print('done')"))
    try:
        fifo = sb.runtime.root / sb.id / execfifo.FIFO_NAME
        assert fifo.exists()
        assert (await sb.state())["status"] == "created"
        await sb.start()
        assert not fifo.exists()
        assert (await sb.state())["status"] == "running"
        with pytest.raises(RuntimeFailure):  # no FIFO any more: `runc start` answers, as before
            await sb.runtime.start(sb.id)
        sb.close_stdin()
        status = await sb.wait(30)
        assert status.exit_code == 0
        assert sb.stdout() == b"done\n"
    finally:
        await sb.destroy()
    no_leaks()


async def test_init_killed_before_start_fails_fast(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    sb = await manager.create(make_spec("python3", "-c", "print('never')"))
    try:
        assert sb.pid is not None
        os.kill(sb.pid, signal.SIGKILL)
        await sb.wait(30)
        with pytest.raises(RuntimeFailure):
            await sb.runtime.start(sb.id)
        assert sb.stdout() == b""
    finally:
        await sb.destroy()
    no_leaks()
