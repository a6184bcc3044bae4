"""Console unit tests: the real app over SQLite, workers replaced by the platform test double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from platform_fakes import FakeFactory  # loaded by tests/unit/conftest.py

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions

BASE = "http://testserver"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[TestClient, Platform, str]]:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=True
    )
    s.data_dir.mkdir(parents=True)
    p = Platform(s, FakeFactory(), options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), base_url=BASE, raise_server_exceptions=False) as c:
        yield c, p, token
