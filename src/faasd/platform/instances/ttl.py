"""Idle TTL of instances: a running instance unused for longer than its ``ttl_s`` is paused (auto-paused).

An auto-paused instance is resumed by its next use (:meth:`InstanceRegistry.use`: exec, files, a
proxied connection). The service runs :func:`pause_idle` every ``ttl_interval_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from faasd.errors import FaasdError, NotFoundError
from faasd.platform.instances.registry import InstanceRegistry

log = logging.getLogger(__name__)

async def pause_idle(registry: InstanceRegistry, auto_pause: Callable[[str], Awaitable[object]]) -> list[str]:
    """Pause (with ``auto_pause(instance_id)``) running instances idle for longer than their TTL;
    returns the ids paused."""
    paused: list[str] = []
    now = time.monotonic()
    for inst_id, live in list(registry.live.items()):
        if live.busy:
            continue
        try:
            inst = registry.get(inst_id)
        except NotFoundError:
            continue
        if inst.status != "running" or inst.ttl_s is None or now - live.last_used < inst.ttl_s:
            continue
        try:
            await auto_pause(inst_id)
            paused.append(inst_id)
            log.info("instance %s idle for %.1f s: paused (ttl)", inst_id, now - live.last_used)
        except FaasdError as exc:
            log.warning("auto-pausing instance %s failed: %s", inst_id, exc.message)
    return paused
