"""A real platform (image store, runc + CRIU) behind the real API (ASGI), with a stateful handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from snapshot_api_helpers import HANDLER, SnapEnv

from faasd.config import Settings
from faasd.testing.leaks import leak_checked_platform


@pytest.fixture
async def snap_env(settings: Settings, unique_id: str, tmp_path: Path) -> AsyncIterator[SnapEnv]:
    from faasd.api.app import create_app
    from faasd.baseimages import ensure_base_images
    from faasd.images.store import ImageStore

    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    src = tmp_path / "src"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER)
    image = f"{unique_id}:1"
    store.add_layer("faasd/python:latest", src, ref=image)
    # every id in env.sandbox_ids (all the platform created or restored, plus the ones added below) is
    # leak-checked after the platform is closed
    async with leak_checked_platform(settings, store) as penv:
        p = penv.platform
        app = create_app(settings, p, manage_platform=False)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://faasd.test", timeout=180
        )
        env = SnapEnv(p, client, settings, image, penv.sandbox_ids)
        try:
            yield env
        finally:
            assert p.snapshots is not None
            env.sandbox_ids |= set(p.snapshots.sandboxes) | set(p.snapshots.restored_workers)
            for pool in p.runner.pools.values():
                env.sandbox_ids |= set(pool.worker_ids())
            await client.aclose()


def pytest_configure(config: pytest.Config) -> None:
    # our own end-to-end tests must fail, not skip, when the daemon cannot start (as in tests/integration/e2e)
    config.option.faasd_require = True
