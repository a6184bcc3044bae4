"""API tests: the real app and services over SQLite, workers replaced by the platform test double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from platform_fakes import FakeFactory  # loaded by tests/unit/conftest.py

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions


@pytest.fixture
def api_factory() -> FakeFactory:
    return FakeFactory()


def make_settings(tmp_path: Path, auth: bool, max_payload: int = 1024 * 1024) -> Settings:
    s = Settings(
        data_dir=tmp_path / "data",
        run_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        auth=auth,
        max_payload_bytes=max_payload,
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return s


@pytest.fixture
def client(tmp_path: Path, api_factory: FakeFactory) -> Iterator[TestClient]:
    s = make_settings(tmp_path, auth=False)
    p = Platform(s, api_factory, options=PlatformOptions(poll_interval_s=0.05))
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def auth_client(tmp_path: Path, api_factory: FakeFactory) -> Iterator[tuple[TestClient, str]]:
    s = make_settings(tmp_path, auth=True)
    p = Platform(s, api_factory, options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        yield c, token


@pytest.fixture
def small_payload_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, auth=False, max_payload=100)
