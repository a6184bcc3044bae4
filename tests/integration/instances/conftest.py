"""A real platform (image store with faasd/python, runc sandboxes) behind the real API (ASGI)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions


@dataclass
class InstanceEnv:
    platform: Platform
    client: httpx.AsyncClient
    settings: Settings


def _runc_ids(settings: Settings) -> list[str]:
    out = subprocess.run(
        ["runc", "--root", str(settings.runc_root), "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or out.stdout.strip() in ("", "null"):
        return []
    return [c["id"] for c in json.loads(out.stdout)]


def assert_no_instance_leaks(settings: Settings, sandbox_ids: set[str]) -> None:
    """Only the sandboxes our instances used (ids recorded by the test) are checked."""
    assert not (set(_runc_ids(settings)) & sandbox_ids)
    for sid in sandbox_ids:
        assert not (settings.sandboxes_dir / sid).exists(), sid
        assert not Path(f"/run/netns/{sid}").exists(), sid
    mounts = Path("/proc/self/mounts").read_text()
    for sid in sandbox_ids:
        assert sid not in mounts, sid
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    for sid in sandbox_ids:
        assert sid not in loops, sid


@pytest.fixture
async def inst_env(settings: Settings) -> AsyncIterator[InstanceEnv]:
    from faasd.api.app import create_app
    from faasd.images.base import ensure_base_images
    from faasd.images.store import ImageStore
    from faasd.platform.runtime_adapter import RuntimeWorkerFactory
    from faasd.runtime.sandbox import SandboxManager

    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    manager = SandboxManager(settings)
    p = Platform(
        settings,
        RuntimeWorkerFactory(settings, manager, store),
        images=store,
        sandboxes=manager,
        options=PlatformOptions(poll_interval_s=0.1, reaper_interval_s=0.2),
    )
    assert p.instances is not None
    p.instances.ttl_interval_s = 0.2
    seen: set[str] = set()
    # record every sandbox the platform creates or restores, for the leak check
    orig_create, orig_restore = manager.create, manager.restore

    async def create(spec: Any, *args: Any, **kw: Any) -> Any:
        seen.add(spec.id)
        return await orig_create(spec, *args, **kw)

    async def restore(spec: Any, *args: Any, **kw: Any) -> Any:
        seen.add(spec.id)
        return await orig_restore(spec, *args, **kw)

    manager.create = create  # type: ignore[method-assign]
    manager.restore = restore  # type: ignore[method-assign]
    await p.start()
    app = create_app(settings, p, manage_platform=False)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://faasd.test", timeout=120
    )
    try:
        yield InstanceEnv(p, client, settings)
    finally:
        await client.aclose()
        await p.close()
        await manager.cleanup_orphans()
        p.db.dispose()
    assert_no_instance_leaks(settings, seen)
