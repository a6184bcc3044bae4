"""Fixtures for escape/abuse tests: a real SandboxManager, an attack runner, leak checks for our ids only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from security_helpers import Attacks, leaks

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
    await m.cleanup_orphans()


@pytest.fixture
async def attacks(manager: SandboxManager, python_rootfs: Path, settings: Settings) -> AsyncIterator[Attacks]:
    a = Attacks(manager, python_rootfs)
    yield a
    for sb in list(manager._sandboxes.values()):
        await sb.destroy()
    left = {sid: leaks(settings, sid) for sid in a.ids}
    assert not any(left.values()), left
