"""Warm pool logic against a worker test double: scale up/down, concurrency, queue bounds, scale to zero."""

from __future__ import annotations

import asyncio

import pytest
from platform_fakes import CFG, FakeFactory

from faasd.errors import CapacityError, InvalidInputError, NotFoundError
from faasd.platform.pool_models import PoolConfig
from faasd.platform.pools import WarmPool
from faasd.platform.worker_protocol import WorkerConfig
from faasd.runtime.agent_client import InvokeRequest

pytestmark = pytest.mark.unit



class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pool(factory: FakeFactory, clock: FakeClock | None = None, **cfg: int | float) -> WarmPool:
    async def start() -> object:
        return await factory.start(CFG)

    return WarmPool("f", PoolConfig(**cfg), start, clock=clock or FakeClock())  # type: ignore[arg-type]


async def test_prewarm_starts_min_workers(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=2, max=4)
    assert await pool.ensure_min() == 2
    assert pool.stats().replicas == 2
    lease = await pool.acquire(1)
    assert not lease.cold
    await pool.release(lease)
    await pool.close()
    assert fake_factory.live == 0


async def test_cold_then_warm_reuses_worker(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=2)
    first = await pool.acquire(1)
    assert first.cold
    await pool.release(first)
    second = await pool.acquire(1)
    assert not second.cold and second.worker is first.worker
    await pool.release(second)
    assert len(fake_factory.started) == 1
    await pool.close()


async def test_scales_up_to_max_under_load_then_saturates(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=3, concurrency=2, queue_size=0)
    leases = [await pool.acquire(1) for _ in range(6)]  # 3 workers x 2 concurrent
    assert pool.stats().replicas == 3
    assert sum(1 for lease in leases if lease.cold) == 3
    with pytest.raises(CapacityError) as info:
        await pool.acquire(1)
    assert info.value.code == "capacity_exhausted" and info.value.retry_after_s > 0
    for lease in leases:
        await pool.release(lease)
    await pool.close()


async def test_queue_bound_and_waiters_get_served(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=1, concurrency=1, queue_size=2)
    busy = await pool.acquire(1)
    waiters = [asyncio.create_task(pool.acquire(5)) for _ in range(2)]
    while pool.stats().queued < 2:
        await asyncio.sleep(0)
    with pytest.raises(CapacityError, match="saturated"):
        await pool.acquire(5)  # queue full
    await pool.release(busy)
    got = await waiters[0] if waiters[0].done() else None
    if got is None:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        got = done.pop().result()
    await pool.release(got)
    rest = [w for w in waiters if w is not None]
    results = await asyncio.gather(*rest)
    for lease in results:
        if lease is not got:
            await pool.release(lease)
    assert pool.stats().queued == 0
    assert len(fake_factory.started) == 1
    await pool.close()


async def test_queue_wait_times_out_with_capacity_error(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=1, concurrency=1, queue_size=5)
    busy = await pool.acquire(1)
    with pytest.raises(CapacityError, match="no worker became free"):
        await pool.acquire(0.05)
    assert pool.stats().queued == 0
    await pool.release(busy)
    await pool.close()


async def test_scale_to_zero_after_idle_ttl(fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(fake_factory, clock, min=0, max=3, idle_ttl_s=60)
    leases = [await pool.acquire(1) for _ in range(3)]
    for lease in leases:
        await pool.release(lease)
    assert await pool.reap_idle() == 0  # not idle long enough
    clock.now += 61
    assert await pool.reap_idle() == 3
    assert pool.stats().replicas == 0
    assert fake_factory.live == 0
    await pool.close()


async def test_reaper_keeps_min_and_busy_workers(fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(fake_factory, clock, min=1, max=3, idle_ttl_s=10)
    busy = await pool.acquire(1)
    idle = [await pool.acquire(1) for _ in range(2)]
    for lease in idle:
        await pool.release(lease)
    clock.now += 100
    closed = await pool.reap_idle()
    # 3 workers, min 1, one busy: the two idle ones may go but one must stay to honour min -> exactly 1 or 2
    assert pool.stats().replicas >= 1
    assert busy.slot in pool._slots  # the busy worker is never reaped
    assert closed == 2
    await pool.release(busy)
    await pool.close()


async def test_broken_worker_is_replaced_not_reused(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=1, max=2)
    await pool.ensure_min()
    lease = await pool.acquire(1)
    await pool.release(lease, broken=True)
    for _ in range(50):
        if pool.stats().replicas == 1:
            break
        await asyncio.sleep(0.01)
    assert lease.worker.id in fake_factory.closed
    nxt = await pool.acquire(1)
    assert nxt.worker is not lease.worker
    await pool.release(nxt)
    await pool.close()


async def test_scale_replicas_pins_pool_and_zero_empties_it(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=2)
    await pool.scale(replicas=3)
    assert pool.config.min == 3 and pool.config.max == 3
    assert pool.stats().replicas == 3
    await pool.scale(replicas=0)
    assert pool.stats().replicas == 0 and fake_factory.live == 0
    with pytest.raises(InvalidInputError):
        await pool.scale(min=5, max=2)
    await pool.close()


async def test_start_failure_releases_reservation(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=1)
    fake_factory.fail_start = RuntimeError("runc exploded")
    with pytest.raises(RuntimeError):
        await pool.acquire(1)
    assert pool.stats().starting == 0
    fake_factory.fail_start = None
    lease = await pool.acquire(1)
    await pool.release(lease)
    await pool.close()


async def test_closed_pool_refuses_and_closes_everything(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=2, max=2)
    await pool.ensure_min()
    await pool.close()
    assert fake_factory.live == 0
    with pytest.raises(NotFoundError):
        await pool.acquire(1)


async def test_close_waits_for_starts_in_flight_and_closes_their_workers(fake_factory: FakeFactory) -> None:
    """A worker whose start was in flight when the pool closed is closed before close() returns (it
    would otherwise outlive its pool: a leaked sandbox once the daemon exits)."""
    fake_factory.start_delay = 0.2
    pool = make_pool(fake_factory, min=0, max=1)  # a request's start
    request = asyncio.create_task(pool.acquire(1))
    await asyncio.sleep(0.05)
    assert pool.stats().starting == 1
    await pool.close()
    assert len(fake_factory.started) == 1 and fake_factory.live == 0
    with pytest.raises(NotFoundError):
        await request
    pool = make_pool(fake_factory, min=2, max=2)  # pre-warm starts
    prewarm = asyncio.create_task(pool.ensure_min())
    await asyncio.sleep(0.05)
    assert pool.stats().starting == 2
    await pool.close()
    assert len(fake_factory.started) == 3 and fake_factory.live == 0
    assert await prewarm == 0


async def test_close_during_a_background_prewarm_neither_hangs_nor_leaks(fake_factory: FakeFactory) -> None:
    """close() cancels the pool's background pre-warm: its starts run to their end and are closed, and
    the start counter is given back (a leaked count made close() wait its full bound: a daemon's DELETE
    hung 70 s)."""
    fake_factory.start_delay = 0.2
    pool = make_pool(fake_factory, min=1, max=1)
    pool.start_background(60.0)  # spawns ensure_min as a background task
    while pool.stats().starting < 1:
        await asyncio.sleep(0.01)
    async with asyncio.timeout(5):  # close's own bound is 120 s
        await pool.close()
    assert pool.stats().starting == 0
    assert len(fake_factory.started) >= 1 and fake_factory.live == 0


async def test_concurrency_limit_is_respected(fake_factory: FakeFactory) -> None:
    fake_factory.gate = asyncio.Event()
    pool = make_pool(fake_factory, min=0, max=2, concurrency=2, queue_size=100)

    async def one(i: int) -> None:
        async with pool.lease(5) as lease:
            await lease.worker.invoke(InvokeRequest(body=str(i).encode()))

    tasks = [asyncio.create_task(one(i)) for i in range(10)]
    while fake_factory.active < 4:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert fake_factory.active == 4  # 2 workers x concurrency 2; the rest wait in the queue
    assert pool.stats().queued == 6
    fake_factory.gate.set()
    await asyncio.gather(*tasks)
    assert fake_factory.peak == 4 and len(fake_factory.started) == 2
    await pool.close()


async def test_request_during_prewarm_waits_for_it_instead_of_starting_more(
    fake_factory: FakeFactory,
) -> None:
    fake_factory.start_delay = 0.05
    pool = make_pool(fake_factory, min=1, max=4)
    prewarm = asyncio.create_task(pool.ensure_min())
    while pool.stats().starting < 1:
        await asyncio.sleep(0)
    lease = await pool.acquire(5)
    await prewarm
    assert len(fake_factory.started) == 1 and not lease.cold
    await pool.release(lease)
    await pool.close()


async def test_failed_prewarm_lets_waiters_start_their_own(fake_factory: FakeFactory) -> None:
    fake_factory.start_delay = 0.05
    fake_factory.fail_start = None
    pool = make_pool(fake_factory, min=1, max=2)

    original = fake_factory.start
    calls = 0

    async def flaky(config):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            raise RuntimeError("first start fails")
        return await original(config)

    fake_factory.start = flaky  # type: ignore[method-assign]
    prewarm = asyncio.create_task(pool.ensure_min())
    while pool.stats().starting < 1:
        await asyncio.sleep(0)
    lease = await pool.acquire(5)
    assert lease.cold and await prewarm == 0
    await pool.release(lease)
    await pool.close()


async def test_drain_close_lets_inflight_finish(fake_factory: FakeFactory) -> None:
    pool = make_pool(fake_factory, min=0, max=2)
    busy = await pool.acquire(1)
    idle = await pool.acquire(1)
    await pool.release(idle)
    await pool.close(drain=True)
    assert idle.worker.id in fake_factory.closed and busy.worker.id not in fake_factory.closed
    result = await busy.worker.invoke(InvokeRequest(body=b"still served"))
    assert result.body == b"echo:still served"
    await pool.release(busy)
    assert busy.worker.id in fake_factory.closed and fake_factory.live == 0


async def test_a_release_wakes_one_queued_request_and_no_wakeup_is_lost(fake_factory: FakeFactory) -> None:
    """A freed slot wakes one queued request (not the whole queue, which costs O(queue) per request under
    load); a woken request that is cancelled before it runs hands its wake-up to the next one."""
    pool = make_pool(fake_factory, min=0, max=1, queue_size=16)
    held = await pool.acquire(1)
    wakeups = 0
    real_wait = pool._free.wait

    async def counting_wait() -> bool:
        nonlocal wakeups
        result = await real_wait()
        wakeups += 1
        return result

    pool._free.wait = counting_wait  # type: ignore[method-assign]
    waiters = [asyncio.ensure_future(pool.acquire(5)) for _ in range(8)]
    await asyncio.sleep(0.05)
    assert pool.stats().queued == 8
    await pool.release(held)
    first = await asyncio.wait_for(waiters[0], 1)
    assert wakeups == 1 and all(not w.done() for w in waiters[1:])
    # the next wake-up goes to waiters[1]: cancel it right after it is notified, before it runs
    await pool.release(first)
    waiters[1].cancel()
    second = await asyncio.wait_for(waiters[2], 1)  # served all the same
    assert waiters[1].cancelled()
    for w in waiters[3:]:
        await pool.release(second)
        second = await asyncio.wait_for(w, 1)
    await pool.release(second)
    assert pool.stats().queued == 0 and pool.stats().inflight == 0
    await pool.close()


def test_worker_config_limits_are_the_functions() -> None:
    config = WorkerConfig(
        function="f", image="img", runtime="python", handler=None, command=None, port=None, env={},
        secrets={}, memory_mb=96, cpu_cores=0.5, pids=64, timeout_s=7.0, disk_mb=300,
    )
    lim = config.limits()
    assert (lim.memory_mb, lim.cpu_cores, lim.pids, lim.disk_mb, lim.timeout_s) == (96, 0.5, 64, 300, 7.0)


async def test_idle_worker_ids_are_the_gateways_hand_off_targets(fake_factory: FakeFactory) -> None:
    """Only a worker with nothing in flight may get a client connection, and none while requests queue."""
    pool = make_pool(fake_factory, min=0, max=1, concurrency=1, queue_size=2)
    lease = await pool.acquire(1)
    wid = lease.slot.worker.id
    assert pool.idle_worker_ids() == set()  # busy
    queued = asyncio.create_task(pool.acquire(5))
    while pool.stats().queued < 1:
        await asyncio.sleep(0)
    await pool.release(lease)
    second = await queued
    assert pool.idle_worker_ids() == set()
    await pool.release(second)
    assert pool.idle_worker_ids() == {wid}
    await pool.close()
