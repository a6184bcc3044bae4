"""Fixtures for chaos tests: a SandboxManager on private dirs; every id a test used is leak-checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chaos_helpers import Ids

from faasd.config import Settings
from faasd.runtime import SandboxManager
from faasd.testing.leaks import find_leaks


@pytest.fixture
async def ids(python_rootfs: Path, settings: Settings, manager: SandboxManager) -> AsyncIterator[Ids]:
    i = Ids(python_rootfs)
    yield i
    left = find_leaks(settings, i.used)
    if left:
        # clean up for the next tests, but still fail this one
        await SandboxManager(settings).cleanup_orphans()
    assert not left, left
