"""The ready FIFO of a starting agent: a pause ends when something is written, and never waits twice."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from faasd.runtime.agent_ready import READY_FIFO_NAME, ReadySignal

pytestmark = pytest.mark.unit


def _write(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"r")
    os.close(fd)


async def test_a_pause_ends_when_the_agent_writes(tmp_path: Path) -> None:
    sig = ReadySignal.create(tmp_path, None)
    try:
        path = tmp_path / READY_FIFO_NAME
        assert stat.S_ISFIFO(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await sig.wait(0.01) is False and not sig.fired  # nothing written: the whole pause
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, _write, path)
        assert await sig.wait(30.0) is True and sig.fired  # ends at the write, not after 30 s
        assert await sig.wait(0.01) is False  # fired: a plain pause from now on (EOF is not a wake-up)
    finally:
        sig.close()
    assert not (tmp_path / READY_FIFO_NAME).exists()
    sig.close()  # idempotent


async def test_the_fifo_belongs_to_the_sandbox_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    sig = ReadySignal.create(tmp_path, (1234, 5678))
    try:
        st = (tmp_path / READY_FIFO_NAME).stat()
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    finally:
        sig.close()
