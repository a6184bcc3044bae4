"""A real platform (image store, runc sandboxes, workers) on private dirs, torn down with leak checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from platform_real_helpers import assert_no_leaks, build_function_image

from faasd.config import Settings
from faasd.platform.core import Platform
from faasd.testing.leaks import leak_checked_platform


@pytest.fixture
async def real_platform(settings: Settings, unique_id: str, tmp_path: Path) -> AsyncIterator[Platform]:
    store = build_function_image(settings, f"{unique_id}:1", tmp_path)
    # every sandbox the platform created is checked by id on exit; then nothing may be left in run_dir
    async with leak_checked_platform(settings, store) as env:  # type: ignore[arg-type]
        yield env.platform
    assert_no_leaks(settings)
