"""Browser tests of the console: Debian's chromium (headless) against a real daemon."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_browser import HANDLER, Browser, missing_browser

from faasd.testing.server import FaasdServer


def pytest_configure(config: pytest.Config) -> None:
    config.option.faasd_require = True  # our own end-to-end tests fail, not skip, without a daemon


@pytest.fixture(scope="module")
def browser_downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture
def browser(faasd_server: FaasdServer, browser_downloads: Path) -> Iterator[Browser]:
    reason = missing_browser()
    if reason:
        pytest.fail(reason)
    b = Browser(faasd_server.url, browser_downloads)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def admin_api(faasd_server: FaasdServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=faasd_server.url, headers={"Authorization": f"Bearer {faasd_server.api_key}"}, timeout=180
    ) as c:
        yield c


@pytest.fixture
def name() -> str:
    return "con-" + uuid.uuid4().hex[:8]


@pytest.fixture
def source_archive(tmp_path: Path) -> Path:
    path = tmp_path / "src.tar.gz"
    data = HANDLER.encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("handler.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cleanup(admin_api: httpx.Client) -> Iterator[list[str]]:
    """API paths to DELETE after the test (functions, sandboxes, instances, snapshots), in reverse."""
    paths: list[str] = []
    yield paths
    for p in reversed(paths):
        admin_api.delete(p, params={"force": "true"} if "/snapshots/" in p else None)
