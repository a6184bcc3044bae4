"""Spare sandboxes for ephemeral functions: the next invocation's sandbox, created ahead of time.

An ``ephemeral`` function gets a fresh sandbox for every invocation, and about half of such a cold start is
creating that sandbox (overlay, network namespace, cgroups, ``runc create``) before the agent can start.
So once an invocation's worker has started, :class:`Spares` creates the function's next sandbox -- created,
**not started**: no process of the function has run in it -- and the next invocation only starts it. It is
as fresh as one created on demand; the invocation's record still says ``cold_start`` and its ``init_ms`` is
the start alone.

* At most one spare per function. It is made while the function's namespace may start one more sandbox
  (the start gate is held while it is made) and is not counted as one of its running sandboxes while it
  waits (no user code runs in it); taking it passes the start gate like any start.
* A spare is used only when the function's worker configuration (image, code, environment, secrets,
  limits, network, isolation) is still the one it was made with; otherwise it is destroyed and a fresh
  sandbox created.
* An invocation arriving while the spare is being made waits for it (it would otherwise make a second
  sandbox at the same time); a spare that cannot be made (quota, a failure) is skipped: the invocation
  creates its sandbox as before.
* Unused for ``ttl_s`` (``Settings.ephemeral_spare_ttl_s``; 0 disables spares) it is destroyed, as it is
  when the function is updated or deleted and when the daemon stops (a crashed daemon's spares are
  removed with its other sandboxes at the next start).
* Functions with a direct address get none (their listening socket is handed over at the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from prometheus_client import Gauge

from faasd.background import Background
from faasd.platform.worker_protocol import PreparedPoolWorker, PreparingFactory, WorkerConfig
from faasd.state import Function

log = logging.getLogger(__name__)

StartGate = Callable[[Function], AbstractContextManager[None]]
"""Held around every worker start (the runner's, and a spare's): raises when the function's namespace may not
start one more sandbox (its quotas, :class:`faasd.platform.quotas.QuotaGuard`)."""


@dataclass
class _Spare:
    prepared: PreparedPoolWorker
    expiry: asyncio.TimerHandle


class Spares:
    """The spare sandboxes of ephemeral functions (see the module)."""

    def __init__(self, factory: PreparingFactory, ttl_s: float, gauge: Gauge | None = None) -> None:
        self.factory = factory
        self.ttl_s = ttl_s
        self._ready: dict[str, _Spare] = {}
        self._making: dict[str, asyncio.Task[None]] = {}
        self._generation: dict[str, int] = {}
        """Bumped when a function's spares are dropped: a spare made for an older generation is discarded."""
        self._discards = Background()
        self._closed = False
        if gauge is not None:
            gauge.set_function(lambda: float(len(self._ready)))

    def count(self) -> int:
        return len(self._ready)

    async def take(self, name: str, config: WorkerConfig) -> PreparedPoolWorker | None:
        """The function's spare when it was made for ``config`` (it is the caller's to launch), else None."""
        making = self._making.get(name)
        if making is not None:
            await asyncio.shield(making)
        spare = self._pop(name)
        if spare is None:
            return None
        if spare.prepared.config != config:
            self._discard(spare.prepared)
            return None
        return spare.prepared

    def refill(self, fn: Function, config: WorkerConfig, gate: StartGate) -> None:
        """Make the function's next spare in the background (unless it has one or one is being made)."""
        name = fn.name
        if self._closed or self.ttl_s <= 0 or config.direct_listener is not None:
            return
        if name in self._ready or name in self._making:
            return
        generation = self._generation.get(name, 0)
        self._making[name] = asyncio.get_running_loop().create_task(self._make(fn, config, gate, generation))

    async def _make(self, fn: Function, config: WorkerConfig, gate: StartGate, generation: int) -> None:
        name = fn.name
        try:
            with gate(fn):
                prepared = await self.factory.prepare(config)
        except Exception as exc:
            log.debug("no spare sandbox for %s: %s", name, exc)
            return
        finally:
            self._making.pop(name, None)
        if self._closed or self._generation.get(name, 0) != generation or name in self._ready:
            self._discard(prepared)
            return
        expiry = asyncio.get_running_loop().call_later(self.ttl_s, self._expire, name, prepared)
        self._ready[name] = _Spare(prepared, expiry)

    def _expire(self, name: str, prepared: PreparedPoolWorker) -> None:
        spare = self._ready.get(name)
        if spare is not None and spare.prepared is prepared:
            del self._ready[name]
            self._discard(prepared)

    def _discard(self, prepared: PreparedPoolWorker) -> None:
        async def discard() -> None:
            try:
                await prepared.discard()
            except Exception:
                log.exception("destroying a spare sandbox of %s failed", prepared.config.function)

        self._discards.spawn(discard())

    def _pop(self, name: str) -> _Spare | None:
        spare = self._ready.pop(name, None)
        if spare is not None:
            spare.expiry.cancel()
        return spare

    async def drop(self, name: str) -> None:
        """Destroy the function's spare (and one being made) and wait until it is gone."""
        self._generation[name] = self._generation.get(name, 0) + 1
        making = self._making.get(name)
        if making is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(making)
        spare = self._pop(name)
        if spare is not None:
            self._discard(spare.prepared)
        await self._discards.drain()

    async def close(self) -> None:
        """Destroy every spare (and those being made) and wait until they are gone."""
        self._closed = True
        for name in {*self._ready, *self._making}:
            await self.drop(name)
        await self._discards.drain()
