"""Fixtures of the execution-record tests: a platform on a real SQLite database with fake workers."""

from __future__ import annotations

from pathlib import Path

import pytest
from perf_fakes import FakeFactory

from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def plat(tmp_path: Path, factory: FakeFactory) -> Platform:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=False
    )
    s.data_dir.mkdir(parents=True)
    return Platform(s, factory, options=PlatformOptions(poll_interval_s=0.05))
