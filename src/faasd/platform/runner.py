"""Where an invocation runs: a warm-pool worker (mode ``cached``) or a fresh one (mode ``ephemeral``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from faasd.background import Background
from faasd.errors import CapacityError, FaasdError, RuntimeFailure
from faasd.platform.addresses import DirectAddresses
from faasd.platform.functions import isolation_of, network_of
from faasd.platform.metrics import Metrics
from faasd.platform.pool_models import Lease, PoolConfig
from faasd.platform.pools import WarmPool
from faasd.platform.secrets import SecretService
from faasd.platform.spares import Spares, StartGate
from faasd.platform.worker_protocol import PoolWorker, WorkerConfig, WorkerFactory, close_quietly
from faasd.state import Function

log = logging.getLogger(__name__)

POOLED_MODES = ("cached", "checkpointed", "branched")
"""Modes served by a warm pool (checkpointed/branched workers are CRIU restores, see platform.snapshots)."""

ModeStarter = Callable[[Function, WorkerConfig], Awaitable[PoolWorker]]


def worker_config(fn: Function, secrets: dict[str, bytes]) -> WorkerConfig:
    return WorkerConfig(
        function=fn.name,
        image=fn.image,
        runtime=fn.runtime,
        handler=fn.handler,
        command=fn.command,
        port=fn.port,
        env=dict(fn.env),
        secrets=secrets,
        memory_mb=fn.memory_mb,
        cpu_cores=fn.cpu_cores,
        pids=fn.pids,
        timeout_s=fn.timeout_s,
        disk_mb=fn.disk_mb,
        concurrency=fn.concurrency,
        network=network_of(fn),
        isolation=isolation_of(fn),
    )


def pool_config(fn: Function) -> PoolConfig:
    return PoolConfig(
        min=fn.scale_min,
        max=fn.scale_max,
        concurrency=fn.concurrency,
        queue_size=fn.queue_size,
        idle_ttl_s=fn.idle_ttl_s,
    )


@dataclass
class Handle:
    """A worker reserved for one invocation; call :meth:`release` exactly once."""

    worker: PoolWorker
    cold: bool
    wait_ms: float
    init_ms: float
    _pool: WarmPool | None = None
    _lease: Lease | None = None
    _eph: _Ephemeral | None = None
    _released: bool = False

    async def release(self, *, broken: bool = False) -> None:
        """A pool worker goes back to its pool (closed when ``broken``). An ephemeral worker frees its
        place in the function's scale at once and is closed in the background (the invocation's answer
        does not wait for the sandbox's teardown); it counts as running (quotas) until it is gone."""
        if self._released:
            return
        self._released = True
        if self._pool is not None and self._lease is not None:
            await self._pool.release(self._lease, broken=broken)
        elif self._eph is not None:
            self._eph.done()
            self._eph.close_later(self.worker)
        else:
            await self.worker.close()


@dataclass
class _Ephemeral:
    limit: int
    queue_size: int
    inflight: int = 0
    running: int = 0
    """Workers started and not yet closed (the rest of ``inflight`` waits or starts; some of these
    already answered and are being closed)."""
    sem: asyncio.Semaphore = field(init=False)
    closing: Background = field(default_factory=Background)

    def __post_init__(self) -> None:
        self.sem = asyncio.Semaphore(self.limit)

    def done(self) -> None:
        self.inflight -= 1
        self.sem.release()

    def close_later(self, worker: PoolWorker) -> None:
        async def close() -> None:
            try:
                await close_quietly(worker)
            finally:
                self.running -= 1

        self.closing.spawn(close())

    async def closed(self) -> None:
        """Wait until every worker handed to :meth:`close_later` is gone (they are never cancelled: a
        half-closed sandbox would outlive the daemon)."""
        await self.closing.drain()


class FunctionRunner:
    def __init__(
        self,
        factory: WorkerFactory,
        secrets: SecretService,
        metrics: Metrics,
        *,
        reaper_interval_s: float | None = None,
    ) -> None:
        self.factory = factory
        self.secrets = secrets
        self.metrics = metrics
        self.reaper_interval_s = reaper_interval_s
        self.pools: dict[str, WarmPool] = {}
        self._ephemeral: dict[str, _Ephemeral] = {}
        self._lock = asyncio.Lock()
        self._retired: list[WarmPool] = []
        self.starters: dict[str, ModeStarter] = {}
        """Per-mode worker start (``checkpointed``/``branched``: set by the snapshot service)."""
        self.direct: DirectAddresses | None = None
        """Direct function addresses (set by the platform when enabled)."""
        self._direct_fns: dict[str, Function] = {}
        self._armed: set[str] = set()
        self._bg: set[asyncio.Task[None]] = set()
        self.start_gate: StartGate | None = None
        """Quota check around every worker start (set by the platform)."""
        self.spares: Spares | None = None
        """Spare sandboxes of ephemeral functions (set by the platform when its factory can make them)."""

    def _gate(self, fn: Function) -> AbstractContextManager[None]:
        return self.start_gate(fn) if self.start_gate is not None else contextlib.nullcontext()

    def live_workers(self, fn_id: str) -> int:
        """Sandboxes a function runs now: its pool's workers and its running ephemeral workers (starts
        in flight are not counted: they hold a quota reservation)."""
        pool = self.pools.get(fn_id)
        pooled = pool.stats().replicas if pool is not None and not pool.closed else 0
        eph = self._ephemeral.get(fn_id)
        return pooled + (eph.running if eph is not None else 0)

    def _on_pool_change(self, pool: WarmPool) -> None:
        st = pool.stats()
        self.metrics.pool_gauges(pool.name).update(st.busy, st.idle, st.queued)
        if pool.name in self._direct_fns:
            self._arm_direct(pool.name, st.replicas + st.starting == 0 and not pool.closed)

    def _starter(self, fn: Function) -> WorkerConfig:
        secrets = self.secrets.values(list(fn.secrets), fn.namespace) if fn.secrets else {}
        config = worker_config(fn, secrets)
        listener = self.direct.listener(fn.name) if self.direct is not None else None
        return dataclasses.replace(config, direct_listener=listener) if listener is not None else config

    # -- direct addresses: a function scaled to zero starts a worker when a client connects -------------
    def watch_direct(self, fn: Function) -> None:
        """``fn`` has a direct address: while it has no worker, the daemon watches the listening socket
        and starts one when a connection waits (the connection is accepted by that worker)."""
        self._direct_fns[fn.name] = fn
        pool = self.pools.get(fn.name)
        st = pool.stats() if pool is not None and not pool.closed else None
        self._arm_direct(fn.name, st is None or st.replicas + st.starting == 0)

    def unwatch_direct(self, name: str) -> None:
        self._arm_direct(name, False)
        self._direct_fns.pop(name, None)

    def _arm_direct(self, name: str, arm: bool) -> None:
        listener = self.direct.listener(name) if self.direct is not None else None
        if arm == (name in self._armed):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if arm and listener is not None:
            loop.add_reader(listener.fileno(), self._direct_waiting, name, listener)
            self._armed.add(name)
        elif not arm:
            self._armed.discard(name)
            if listener is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(listener.fileno())

    def _direct_waiting(self, name: str, listener: object) -> None:
        self._arm_direct(name, False)
        task = asyncio.create_task(self._wake(name))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _wake(self, name: str) -> None:
        fn = self._direct_fns.get(name)
        if fn is None:
            return
        try:
            pool = await self.pool_for(fn)
            lease = await pool.acquire(fn.timeout_s)
            await pool.release(lease)
        except FaasdError as exc:
            log.warning("could not start a worker for %s's direct address: %s", name, exc.message)
            await asyncio.sleep(1.0)  # do not spin on a function that cannot start
            if name in self._direct_fns:
                self.watch_direct(fn)

    async def pool_for(self, fn: Function) -> WarmPool:
        async with self._lock:
            pool = self.pools.get(fn.name)
            if pool is None or pool.closed:
                snapshot = fn

                async def start() -> PoolWorker:
                    # Secrets are read at every start: a worker started after a secret update sees it.
                    mode_start = self.starters.get(snapshot.mode)
                    with self._gate(snapshot):
                        if mode_start is not None:
                            return await mode_start(snapshot, self._starter(snapshot))
                        return await self.factory.start(self._starter(snapshot))

                pool = WarmPool(fn.name, pool_config(fn), start, on_change=self._on_pool_change)
                self.pools[fn.name] = pool
                pool.start_background(self.reaper_interval_s)
            return pool

    async def acquire(self, fn: Function, timeout_s: float) -> Handle:
        if fn.mode in POOLED_MODES:
            pool = await self.pool_for(fn)
            lease = await pool.acquire(timeout_s)
            return Handle(lease.worker, lease.cold, lease.wait_ms, lease.init_ms, _pool=pool, _lease=lease)
        eph = self._ephemeral.get(fn.name)
        if eph is None or eph.limit != fn.scale_max or eph.queue_size != fn.queue_size:
            eph = self._ephemeral[fn.name] = _Ephemeral(fn.scale_max, fn.queue_size)
        if eph.inflight >= eph.limit + eph.queue_size:
            raise CapacityError(
                f"function {fn.name!r} is saturated: {eph.inflight} invocation(s) running or queued "
                f"(scale.max {fn.scale_max} + queue_size {fn.queue_size}); retry later",
                retry_after_s=1.0,
                function=fn.name,
            )
        t0 = time.monotonic()
        eph.inflight += 1
        try:
            async with asyncio.timeout(timeout_s):
                await eph.sem.acquire()
        except TimeoutError:
            eph.inflight -= 1
            raise CapacityError(
                f"function {fn.name!r}: no capacity within {timeout_s:g} s; retry later",
                retry_after_s=1.0,
                function=fn.name,
            ) from None
        except BaseException:
            eph.inflight -= 1
            raise
        t1 = time.monotonic()
        try:
            with self._gate(fn):
                config = self._starter(fn)
                worker = await self._start_ephemeral(fn, config)
        except BaseException:
            eph.done()
            raise
        eph.running += 1
        return Handle(worker, True, (t1 - t0) * 1000, (time.monotonic() - t1) * 1000, _eph=eph)

    async def _start_ephemeral(self, fn: Function, config: WorkerConfig) -> PoolWorker:
        """A fresh worker for one invocation: the function's spare sandbox started when it has one
        (:mod:`faasd.platform.spares`), else one created now; the next spare is made meanwhile (while a
        spare starts) or after (a sandbox being created now has the machine to itself)."""
        spares = self.spares
        if spares is None:
            return await self.factory.start(config)
        prepared = await spares.take(fn.name, config)
        if prepared is not None:
            spares.refill(fn, config, self._gate)
            try:
                return await prepared.launch(ahead=True)
            except RuntimeFailure as exc:  # a spare that broke while it waited: a fresh one instead
                log.warning("the spare sandbox of %s did not start (%s); creating one", fn.name, exc.message)
        worker = await self.factory.start(config)
        spares.refill(fn, config, self._gate)
        return worker

    def status(self, fn: Function) -> dict[str, int]:
        pool = self.pools.get(fn.name)
        if pool is not None and not pool.closed:
            st = pool.stats()
            return {
                "replicas": st.replicas,
                "busy": st.busy,
                "queued": st.queued,
                "starting": st.starting,
                "min": st.min,
                "max": st.max,
            }
        eph = self._ephemeral.get(fn.name)
        running = eph.inflight if eph is not None else 0
        return {
            "replicas": running if fn.mode == "ephemeral" else 0,
            "busy": running,
            "queued": 0,
            "starting": 0,
            "min": fn.scale_min,
            "max": fn.scale_max,
        }

    async def scale(
        self, fn: Function, *, min: int | None = None, max: int | None = None, replicas: int | None = None
    ) -> None:
        if fn.mode not in POOLED_MODES:
            return
        pool = await self.pool_for(fn)
        await pool.scale(min=min, max=max, replicas=replicas)

    async def settled(self, name: str) -> None:
        """Wait until the ephemeral workers of ``name`` that already answered are closed."""
        eph = self._ephemeral.get(name)
        if eph is not None:
            await eph.closed()

    async def drop(self, name: str) -> None:
        """Retire a function's pool (update/delete): idle workers stop now, busy ones after their request."""
        self.unwatch_direct(name)
        async with self._lock:
            pool = self.pools.pop(name, None)
            eph = self._ephemeral.pop(name, None)
        if self.spares is not None:
            await self.spares.drop(name)
        if eph is not None:
            await eph.closed()
        if pool is not None:
            await pool.close(drain=True)
            self._retired = [p for p in self._retired if p.draining]
            if pool.draining:
                self._retired.append(pool)
        self.metrics.forget_function(name)

    async def close(self) -> None:
        for name in list(self._direct_fns):
            self.unwatch_direct(name)
        for task in list(self._bg):
            task.cancel()
        async with self._lock:
            pools, self.pools = list(self.pools.values()), {}
            pools += self._retired
            self._retired = []
            ephemeral = list(self._ephemeral.values())
        await asyncio.gather(
            *(p.close() for p in pools),
            *(e.closed() for e in ephemeral),
            *([self.spares.close()] if self.spares is not None else []),
            return_exceptions=True,
        )
