"""Fixtures for escape/abuse tests: a real SandboxManager, an attack runner, leak checks for our ids only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from security_helpers import Attacks

from faasd.config import Settings
from faasd.runtime import SandboxManager
from faasd.testing.leaks import find_leaks


@pytest.fixture
async def attacks(manager: SandboxManager, python_rootfs: Path, settings: Settings) -> AsyncIterator[Attacks]:
    a = Attacks(manager, python_rootfs)
    yield a
    for sb in list(manager._sandboxes.values()):
        await sb.destroy()
    left = find_leaks(settings, a.ids)
    assert not left, left
