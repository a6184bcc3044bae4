"""Warm pools: pre-started workers per function (execution mode ``cached``).

A pool keeps at least ``min`` workers, starts more up to ``max`` under load, lets each worker serve
``concurrency`` requests at once, queues up to ``queue_size`` requests when everything is busy and
refuses beyond that with :class:`~faasd.errors.CapacityError` (HTTP 429 + Retry-After). Workers above
``min`` that stay idle longer than ``idle_ttl_s`` are closed (scale to zero when ``min`` is 0).

All bookkeeping happens under one lock (:class:`asyncio.Condition` ``_cond`` for every state change, and
``_free`` on the same lock for queued requests: a release that frees one slot wakes one of them, not the
whole queue); worker start/close (slow, real I/O) happens outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from faasd.errors import CapacityError, InvalidInputError, NotFoundError
from faasd.platform.pool_models import Lease, PoolConfig, PoolStats, Slot
from faasd.platform.worker_protocol import PoolWorker, close_quietly

log = logging.getLogger(__name__)
CLOSE_WAIT_FOR_STARTS_S = 120.0
"""How long closing a pool waits for worker starts in flight (each closes its worker once started)."""

Clock = Callable[[], float]


class WarmPool:
    def __init__(
        self,
        name: str,
        config: PoolConfig,
        start_worker: Callable[[], Awaitable[PoolWorker]],
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[WarmPool], None] | None = None,
    ) -> None:
        config.validate()
        self.name = name
        self.config = config
        self._start_worker = start_worker
        self._clock = clock
        self._on_change = on_change
        lock = asyncio.Lock()
        self._cond = asyncio.Condition(lock)
        self._free = asyncio.Condition(lock)
        """Queued requests wait here: woken one per freed slot (and all at once by any other change)."""
        self._slots: list[Slot] = []
        self._draining: list[Slot] = []
        """Busy workers of a pool closed with ``drain=True``: closed when their last request ends."""
        self._starting = 0
        self._late_closes = 0
        """Workers whose start finished after the pool closed, being closed (:meth:`close` waits for them)."""
        self._prewarming = 0
        """Starts from :meth:`ensure_min` still in flight: requests wait for them instead of starting more."""
        self._prewarm_waiters = 0
        self._waiting = 0
        self._closed = False
        self._bg: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    # -- introspection -------------------------------------------------------------------------
    def stats(self) -> PoolStats:
        busy = sum(1 for s in self._slots if s.inflight > 0)
        return PoolStats(
            replicas=len(self._slots),
            busy=busy,
            idle=len(self._slots) - busy,
            starting=self._starting,
            queued=self._waiting,
            min=self.config.min,
            max=self.config.max,
            inflight=sum(s.inflight for s in self._slots),
            served=sum(s.served for s in self._slots),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def draining(self) -> int:
        return len(self._draining)

    def _notify_all(self) -> None:
        self._cond.notify_all()
        self._free.notify_all()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self)
            except Exception:  # metrics must never break the pool
                log.exception("pool on_change hook failed")

    # -- acquire / release ---------------------------------------------------------------------
    def _pick(self) -> Slot | None:
        free = [s for s in self._slots if not s.broken and s.inflight < self.config.concurrency]
        if not free:
            return None
        # Least loaded first, then most recently used (keeps the others idle so they can be reaped).
        return min(free, key=lambda s: (s.inflight, -s.last_used))

    async def acquire(self, timeout_s: float) -> Lease:
        """Get a worker slot, starting a worker when allowed; wait up to ``timeout_s`` in the queue."""
        t0 = self._clock()
        deadline = time.monotonic() + timeout_s
        queued = False
        async with self._cond:
            try:
                while True:
                    if self._closed:
                        raise NotFoundError(
                            f"function {self.name!r} was deleted or its pool is shutting down"
                        )
                    slot = self._pick()
                    if slot is not None:
                        slot.inflight += 1
                        slot.last_used = self._clock()
                        self._changed()
                        return Lease(slot, cold=False, wait_ms=(self._clock() - t0) * 1000, init_ms=0.0)
                    if self._prewarming * self.config.concurrency > self._prewarm_waiters:
                        # A pre-warm start is in flight: wait for that worker rather than start another.
                        self._prewarm_waiters += 1
                        try:
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                                    await self._cond.wait()
                        finally:
                            self._prewarm_waiters -= 1
                        if time.monotonic() >= deadline and self._pick() is None:
                            raise CapacityError(
                                f"function {self.name!r}: no worker became ready within {timeout_s:g} s; "
                                "retry later",
                                retry_after_s=1.0,
                                function=self.name,
                            )
                        continue
                    if len(self._slots) + self._starting < self.config.max:
                        self._starting += 1
                        break
                    if not queued:
                        if self._waiting >= self.config.queue_size:
                            raise CapacityError(
                                f"function {self.name!r} is saturated: {len(self._slots)} worker(s) busy "
                                f"(max {self.config.max}, concurrency {self.config.concurrency}) and "
                                f"{self._waiting} request(s) queued (queue size {self.config.queue_size}); "
                                "retry later or raise the function's scale.max / queue_size",
                                retry_after_s=1.0,
                                function=self.name,
                            )
                        self._waiting += 1
                        queued = True
                        self._changed()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise CapacityError(
                            f"function {self.name!r}: no worker became free within {timeout_s:g} s; "
                            "retry later",
                            retry_after_s=1.0,
                            function=self.name,
                        )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._free.wait()
            except BaseException:
                if queued:  # a wake-up this request may have been given goes to the next in the queue
                    self._free.notify(1)
                raise
            finally:
                if queued:
                    self._waiting -= 1
                    self._changed()
        # A start was reserved: do the slow part outside the lock.
        t1 = self._clock()
        try:
            worker = await self._start_worker()
        except BaseException:
            async with self._cond:
                self._starting -= 1
                self._notify_all()
                self._changed()
            raise
        async with self._cond:
            self._starting -= 1
            if self._closed:
                self._late_closes += 1
                self._notify_all()
                closed = True
            else:
                closed = False
                slot = Slot(worker, inflight=1, last_used=self._clock())
                self._slots.append(slot)
                self._notify_all()
            self._changed()
        if closed:
            try:
                await close_quietly(worker)
            finally:
                async with self._cond:
                    self._late_closes -= 1
                    self._notify_all()
            raise NotFoundError(f"function {self.name!r} was deleted while its worker was starting")
        return Lease(slot, cold=True, wait_ms=(t1 - t0) * 1000, init_ms=(self._clock() - t1) * 1000)

    async def release(self, lease: Lease, *, broken: bool = False) -> None:
        """Give a slot back. ``broken=True`` (crash, time-out) removes and closes the worker."""
        slot = lease.slot
        to_close: PoolWorker | None = None
        async with self._cond:
            slot.inflight -= 1
            slot.served += 1
            slot.last_used = self._clock()
            if broken:
                slot.broken = True
            if slot.broken and slot.inflight <= 0 and slot in self._slots:
                self._slots.remove(slot)
                to_close = slot.worker
            drained = slot.inflight <= 0 and slot in self._draining
            if drained:
                self._draining.remove(slot)
            if to_close is None and not drained:
                # one slot is free: one queued request takes it (waking all of them costs O(queue) per
                # request); waiters for other changes (pre-warm, hold) still see every change
                self._cond.notify_all()
                self._free.notify(1)
            else:
                self._notify_all()
            self._changed()
        if drained:
            await close_quietly(slot.worker)
            return
        if to_close is not None:
            log.info(
                "worker %s of %s discarded (broken: crashed, timed out or unusable)",
                to_close.id,
                self.name,
            )
            await close_quietly(to_close)
            if not self._closed:
                self._spawn(self.ensure_min())

    @contextlib.asynccontextmanager
    async def lease(self, timeout_s: float) -> AsyncIterator[Lease]:
        lease = await self.acquire(timeout_s)
        broken = False
        try:
            yield lease
        except BaseException:
            broken = True
            raise
        finally:
            await self.release(lease, broken=broken)

    def worker_ids(self) -> list[str]:
        return [s.worker.id for s in self._slots]

    def idle_worker_ids(self) -> set[str]:
        """Workers serving nothing the pool handed them (no lease in flight), none waiting for one."""
        if self._waiting:
            return set()
        return {s.worker.id for s in self._slots if s.inflight <= 0 and not s.broken}

    @contextlib.asynccontextmanager
    async def hold(self, worker_id: str, timeout_s: float) -> AsyncIterator[PoolWorker]:
        """Exclusive use of one worker (e.g. to snapshot it): waits until it has no request in flight
        and keeps new requests off it until the block ends."""
        deadline = time.monotonic() + timeout_s
        async with self._cond:
            while True:
                slot = next((s for s in self._slots if s.worker.id == worker_id), None)
                if slot is None or slot.broken:
                    raise NotFoundError(f"worker {worker_id} is not in the pool of {self.name!r}")
                if slot.inflight == 0:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CapacityError(
                        f"worker {worker_id} of {self.name!r} stayed busy for {timeout_s:g} s; retry later",
                        retry_after_s=1.0,
                        function=self.name,
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._cond.wait()
            hold = builtin_max(1, self.config.concurrency)
            slot.inflight += hold
            self._changed()
        try:
            yield slot.worker
        finally:
            async with self._cond:
                slot.inflight -= hold
                slot.last_used = self._clock()
                self._notify_all()
                self._changed()

    # -- scaling -------------------------------------------------------------------------------
    async def ensure_min(self, wait: bool = True) -> int:
        """Start workers until ``min`` exist (pre-warm). Returns how many this call started.

        With ``wait`` it also waits for starts already in flight (e.g. a replacement of a broken worker),
        so that on return the pool holds ``min`` workers unless a start failed."""
        started = 0
        while True:
            async with self._cond:
                if self._closed:
                    return started
                need = max(0, self.config.min - len(self._slots) - self._starting)
                if need == 0:
                    if not wait or self._starting == 0 or len(self._slots) >= self.config.min:
                        return started
                    await self._cond.wait()
                    continue
                self._starting += need
                self._prewarming += need
                self._changed()
            starts = asyncio.gather(*(self._start_worker() for _ in range(need)), return_exceptions=True)
            cancelled = False
            try:
                results = await asyncio.shield(starts)
            except asyncio.CancelledError:
                # The pool is closing (it cancels its background tasks): the starts run to their end and
                # what they started is closed below, so the counters stay true and no sandbox is left.
                cancelled = True
                results = await starts
            failed = False
            to_close: list[PoolWorker] = []
            async with self._cond:
                self._starting -= need
                self._prewarming -= need
                for r in results:
                    if isinstance(r, BaseException):
                        log.warning("pre-warming a worker for %s failed: %s", self.name, r)
                        failed = True
                        continue
                    if self._closed:
                        to_close.append(r)
                        continue
                    self._slots.append(Slot(r, last_used=self._clock()))
                    started += 1
                self._late_closes += len(to_close)
                self._notify_all()
                self._changed()
            try:
                for w in to_close:
                    await close_quietly(w)
            finally:
                if to_close:
                    async with self._cond:
                        self._late_closes -= len(to_close)
                        self._notify_all()
            if cancelled:
                raise asyncio.CancelledError
            if failed:
                return started

    async def reap_idle(self, now: float | None = None) -> int:
        """Close workers above ``min`` idle for longer than ``idle_ttl_s``. Returns how many were closed."""
        now = self._clock() if now is None else now
        victims: list[Slot] = []
        async with self._cond:
            keep = len(self._slots)
            # Oldest-idle first.
            for slot in sorted(self._slots, key=lambda s: s.last_used):
                if keep <= self.config.min:
                    break
                if slot.inflight == 0 and now - slot.last_used >= self.config.idle_ttl_s:
                    victims.append(slot)
                    keep -= 1
            for v in victims:
                self._slots.remove(v)
            if victims:
                self._changed()
        for v in victims:
            await close_quietly(v.worker)
        return len(victims)

    async def _trim_to(self, target: int) -> int:
        victims: list[Slot] = []
        async with self._cond:
            excess = len(self._slots) - target
            for slot in sorted(self._slots, key=lambda s: s.last_used):
                if excess <= 0:
                    break
                if slot.inflight == 0:
                    victims.append(slot)
                    excess -= 1
            for v in victims:
                self._slots.remove(v)
            if victims:
                self._changed()
        for v in victims:
            await close_quietly(v.worker)
        return len(victims)

    async def scale(
        self, *, min: int | None = None, max: int | None = None, replicas: int | None = None
    ) -> None:
        """Change bounds. ``replicas=N`` pins the pool at N now: ``min = N`` (``max`` raised if needed),
        idle workers beyond N are closed, missing ones started. ``replicas=0`` scales to zero."""
        new = PoolConfig(
            min=self.config.min if min is None else min,
            max=self.config.max if max is None else max,
            concurrency=self.config.concurrency,
            queue_size=self.config.queue_size,
            idle_ttl_s=self.config.idle_ttl_s,
        )
        if replicas is not None:
            if replicas < 0:
                raise InvalidInputError(f"replicas must be >= 0, got {replicas}")
            new.min = replicas
            new.max = builtin_max(new.max, replicas, 1)
        new.validate()
        async with self._cond:
            self.config = new
            self._notify_all()
            self._changed()
        if replicas is not None:
            await self._trim_to(replicas)
        else:
            await self._trim_to(new.max)
        await self.ensure_min()

    # -- background ----------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("pool %s background task failed", self.name)

        task = asyncio.get_running_loop().create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def start_background(self, interval_s: float | None = None) -> None:
        """Pre-warm to ``min`` and start the idle reaper."""
        self._spawn(self.ensure_min())
        if self._reaper is None:
            period = (
                interval_s
                if interval_s is not None
                else builtin_max(0.2, builtin_min(5.0, self.config.idle_ttl_s / 4))
            )
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(period))

    async def _reap_loop(self, period: float) -> None:
        while not self._closed:
            await asyncio.sleep(period)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("reaping idle workers of %s failed", self.name)

    async def close(self, *, drain: bool = False) -> None:
        """Refuse new requests and close the workers. With ``drain`` busy workers finish their requests
        and are closed when released; without it (daemon shutdown) every worker is closed now."""
        async with self._cond:
            self._closed = True
            if drain:
                self._draining.extend(s for s in self._slots if s.inflight > 0)
                slots = [s for s in self._slots if s.inflight <= 0]
            else:
                slots = self._slots + self._draining
                self._draining = []
            self._slots = []
            self._notify_all()
            self._changed()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for t in list(self._bg):
            t.cancel()
        for t in list(self._bg):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.gather(*(close_quietly(s.worker) for s in slots))
        # a start in flight when the pool closed ends by closing its worker: wait for that, so that no
        # sandbox outlives its pool (the caller may check for leftovers, or the daemon exit, right after)
        async with self._cond:
            try:
                async with asyncio.timeout(CLOSE_WAIT_FOR_STARTS_S):
                    await self._cond.wait_for(lambda: self._starting == 0 and self._late_closes == 0)
            except TimeoutError:
                log.warning("%s: %d worker start(s) still running after the pool closed", self.name,
                            self._starting + self._late_closes)


builtin_max = max
builtin_min = min
