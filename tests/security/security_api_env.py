"""A real platform (image store with faasd/python plus one function image, runc/runsc sandboxes) behind the
real API (ASGI, no auth), with leak checks by sandbox id on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform
from faasd.testing.leaks import leak_checked_platform


@dataclass
class Env:
    platform: Platform
    client: httpx.AsyncClient
    settings: Settings


@asynccontextmanager
async def api_env(settings: Settings, tmp: Path, image_ref: str, handler: str) -> AsyncIterator[Env]:
    """``image_ref`` is faasd/python:latest plus ``handler.py`` = ``handler``."""
    from faasd.baseimages import ensure_base_images
    from faasd.images.store import ImageStore

    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    src = tmp / "src"
    src.mkdir()
    (src / "handler.py").write_text(handler)
    store.add_layer("faasd/python:latest", src, ref=image_ref)
    async with leak_checked_platform(settings, store) as pe:
        app = create_app(settings, pe.platform, manage_platform=False)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://faasd.test", timeout=180
        )
        try:
            yield Env(pe.platform, client, settings)
        finally:
            await client.aclose()
