"""A real platform (image store with faasd/python, runc sandboxes) behind the real API (ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from instances_env import InstanceEnv

from faasd.config import Settings
from faasd.platform.core import Platform
from faasd.testing.leaks import leak_checked_platform


def _fast_ttl(p: Platform) -> None:
    assert p.instances is not None
    p.instances.ttl_interval_s = 0.2


@pytest.fixture
async def inst_env(settings: Settings) -> AsyncIterator[InstanceEnv]:
    from faasd.api.app import create_app
    from faasd.baseimages import ensure_base_images
    from faasd.images.store import ImageStore

    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    # every sandbox the platform creates or restores is recorded and checked for leaks on exit
    async with leak_checked_platform(settings, store, configure=_fast_ttl) as env:
        app = create_app(settings, env.platform, manage_platform=False)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://faasd.test", timeout=120
        )
        try:
            yield InstanceEnv(env.platform, client, settings)
        finally:
            await client.aclose()
