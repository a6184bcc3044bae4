"""A real platform (image store, runc sandboxes, workers) on private dirs, torn down with leak checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from platform_real_helpers import assert_no_leaks, build_function_image

from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions


@pytest.fixture
async def real_platform(settings: Settings, unique_id: str, tmp_path: Path) -> AsyncIterator[Platform]:
    from faasd.platform.runtime_adapter import RuntimeWorkerFactory
    from faasd.runtime.sandbox import SandboxManager

    store = build_function_image(settings, f"{unique_id}:1", tmp_path)
    manager = SandboxManager(settings)
    p = Platform(
        settings,
        RuntimeWorkerFactory(settings, manager, store),
        images=store,
        sandboxes=manager,
        options=PlatformOptions(poll_interval_s=0.1, reaper_interval_s=0.2),
    )
    await p.start()
    try:
        yield p
    finally:
        await p.close()
        await manager.cleanup_orphans()
        p.db.dispose()
    assert_no_leaks(settings)
