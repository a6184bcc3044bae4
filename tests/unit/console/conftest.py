"""Console unit tests: the real app over SQLite, workers replaced by the platform test double."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions

if "platform_fakes" in sys.modules:
    fakes = sys.modules["platform_fakes"]
else:
    _spec = importlib.util.spec_from_file_location(
        "platform_fakes", Path(__file__).parents[1] / "platform" / "platform_fakes.py"
    )
    assert _spec is not None and _spec.loader is not None
    fakes = importlib.util.module_from_spec(_spec)
    sys.modules["platform_fakes"] = fakes
    _spec.loader.exec_module(fakes)

BASE = "http://testserver"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[TestClient, Platform, str]]:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=True
    )
    s.data_dir.mkdir(parents=True)
    p = Platform(s, fakes.FakeFactory(), options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), base_url=BASE, raise_server_exceptions=False) as c:
        yield c, p, token
