"""Fixtures for chaos tests: a SandboxManager on private dirs; every id a test used is leak-checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chaos_helpers import Ids, leaks

from faasd.config import Settings
from faasd.runtime import SandboxManager


@pytest.fixture
async def manager(settings: Settings) -> AsyncIterator[SandboxManager]:
    m = SandboxManager(settings)
    yield m
    for sb in list(m._sandboxes.values()):
        try:
            await sb.destroy()
        except Exception as exc:  # reported, not hidden
            print(f"cleanup of {sb.id} failed: {exc}")


@pytest.fixture
async def ids(python_rootfs: Path, settings: Settings, manager: SandboxManager) -> AsyncIterator[Ids]:
    i = Ids(python_rootfs)
    yield i
    left = {sid: leaks(settings, sid) for sid in i.used}
    if any(left.values()):
        # clean up for the next tests, but still fail this one
        await SandboxManager(settings).cleanup_orphans()
    assert not any(left.values()), left
