"""Fixtures for platform unit tests (test doubles live in ``platform_fakes``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from platform_fakes import FakeFactory

from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions


@pytest.fixture
def fake_factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def unit_settings(tmp_path: Path) -> Settings:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=False
    )
    s.data_dir.mkdir(parents=True)
    return s


@pytest.fixture
def platform(unit_settings: Settings, fake_factory: FakeFactory) -> Platform:
    return Platform(unit_settings, fake_factory, options=PlatformOptions(poll_interval_s=0.05))
