"""Warm execute sandboxes: started ahead of time (``faasd-init`` as PID 1), each used by one execution.

``POST /api/v1/prewarm`` starts them; an ephemeral or cached execution whose image, runtime and limits
match takes one (no sandbox creation on its path: a *warm* start), runs its command in it with
``exec`` and destroys it afterwards, so no state passes from one execution to the next. A taken
sandbox is replaced in the background up to the pool's target size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from faasd.config import Settings
from faasd.errors import FaasdError, InvalidInputError
from faasd.runtime.agent_files import INIT_DIR_IN_CONTAINER, init_mount
from faasd.runtime.models import Limits, NetworkSpec, SandboxSpec
from faasd.runtime.sandbox import Sandbox, SandboxManager

log = logging.getLogger(__name__)

INIT_ARGS = [f"{INIT_DIR_IN_CONTAINER}/faasd-init"]
MAX_WARM_PER_POOL = 16
MAX_WARM_TOTAL = 64


@dataclass(frozen=True)
class PoolKey:
    image_id: str
    runtime: Literal["runc", "runsc"]
    memory_mb: int
    cpu_cores: float


@dataclass
class _Pool:
    key: PoolKey
    image_ref: str
    target: int = 0
    idle: list[Sandbox] = field(default_factory=list)
    starting: int = 0
    taken: int = 0
    started: int = 0
    failures: int = 0
    last_error: str | None = None
    refills: set[asyncio.Task[None]] = field(default_factory=set)


class WarmExecPool:
    def __init__(
        self,
        settings: Settings,
        manager: SandboxManager,
        resolve_image: Callable[[str], Awaitable[Any]],
        layer_dirs: Callable[[Any], list[Any]],
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.resolve_image = resolve_image
        self.layer_dirs = layer_dirs
        self._pools: dict[PoolKey, _Pool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- sandboxes ----------------------------------------------------------------------------
    async def start_sandbox(self, image: Any, key: PoolKey) -> Sandbox:
        """A started sandbox on ``image`` running ``faasd-init``, ready for ``exec``."""
        mount = await asyncio.to_thread(init_mount, self.settings)
        spec = SandboxSpec(
            id="fd-w" + secrets.token_hex(8),
            lowers=list(self.layer_dirs(image)),
            args=list(INIT_ARGS),
            image_config=image.config,
            limits=Limits(memory_mb=key.memory_mb, cpu_cores=key.cpu_cores, timeout_s=None),
            network=NetworkSpec(mode="none"),
            mounts=[mount],
            runtime=key.runtime,
        )
        return await self.manager.start_new(spec)

    def take(self, key: PoolKey) -> Sandbox | None:
        pool = self._pools.get(key)
        if pool is None or not pool.idle:
            return None
        sb = pool.idle.pop()
        pool.taken += 1
        self._refill(pool)
        return sb

    # -- prewarm ------------------------------------------------------------------------------
    async def prewarm(
        self,
        image_ref: str,
        count: int,
        runtime: Literal["runc", "runsc"] = "runc",
        memory_mb: int = 256,
        cpu_cores: float = 1.0,
    ) -> dict[str, Any]:
        """Raise the pool of ``image_ref`` to ``count`` warm sandboxes and wait until they run."""
        if not 0 <= count <= MAX_WARM_PER_POOL:
            raise InvalidInputError(f"count must be between 0 and {MAX_WARM_PER_POOL}, got {count}")
        image = await self.resolve_image(image_ref)
        key = PoolKey(image.id, runtime, memory_mb, cpu_cores)
        pool = self._pools.get(key)
        others = sum(p.target for p in self._pools.values() if p is not pool)
        if others + count > MAX_WARM_TOTAL:
            raise InvalidInputError(
                f"at most {MAX_WARM_TOTAL} warm execute sandboxes in all; {others} are already asked for"
            )
        if pool is None:
            pool = self._pools[key] = _Pool(key, image_ref)
        pool.target = count
        while len(pool.idle) > count:
            await pool.idle.pop().destroy()
        missing = count - len(pool.idle) - pool.starting
        results = await asyncio.gather(*(self._start_one(pool, image) for _ in range(max(0, missing))))
        # replacements of taken sandboxes still starting count too: wait for them
        await asyncio.gather(*list(pool.refills), return_exceptions=True)
        errors = [r for r in results if r is not None]
        if errors and not pool.idle:
            raise errors[0]
        return self.pool_dict(pool)

    async def _start_one(self, pool: _Pool, image: Any) -> FaasdError | None:
        pool.starting += 1
        try:
            sb = await self.start_sandbox(image, pool.key)
        except FaasdError as exc:
            pool.failures += 1
            pool.last_error = exc.message
            log.warning("warm execute sandbox for %s failed to start: %s", pool.image_ref, exc.message)
            return exc
        finally:
            pool.starting -= 1
        if self._closed or len(pool.idle) >= pool.target:
            await sb.destroy()
        else:
            pool.idle.append(sb)
            pool.started += 1
        return None

    def _refill(self, pool: _Pool) -> None:
        if self._closed or len(pool.idle) + pool.starting >= pool.target:
            return

        async def refill() -> None:
            try:
                image = await self.resolve_image(pool.image_ref)
                await self._start_one(pool, image)
            except FaasdError as exc:
                pool.last_error = exc.message

        task = asyncio.get_running_loop().create_task(refill())
        self._tasks.add(task)
        pool.refills.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(pool.refills.discard)

    # -- views --------------------------------------------------------------------------------
    def pool_dict(self, pool: _Pool) -> dict[str, Any]:
        return {
            "image": pool.image_ref,
            "image_id": pool.key.image_id,
            "runtime": pool.key.runtime,
            "memory_mb": pool.key.memory_mb,
            "cpu_cores": pool.key.cpu_cores,
            "target": pool.target,
            "warm": len(pool.idle),
            "starting": pool.starting,
            "taken": pool.taken,
            "started": pool.started,
            "failures": pool.failures,
            "last_error": pool.last_error,
            "sandbox_ids": [sb.id for sb in pool.idle],
        }

    def list(self) -> list[dict[str, Any]]:
        return [self.pool_dict(p) for p in self._pools.values()]

    def warm_count(self) -> int:
        return sum(len(p.idle) for p in self._pools.values())

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for pool in self._pools.values():
            while pool.idle:
                with contextlib.suppress(Exception):
                    await pool.idle.pop().destroy()
            pool.target = 0
