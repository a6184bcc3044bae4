"""The spare sandboxes' bookkeeping (:mod:`faasd.platform.spares`) with a test double for the factory:
which spare an invocation gets, when one is made, and that every one made is launched or discarded."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator

import pytest
from platform_fakes import CFG
from prometheus_client import CollectorRegistry, Gauge

from faasd.errors import FaasdError
from faasd.platform.spares import Spares
from faasd.platform.worker_protocol import PoolWorker, PreparingFactory, WorkerConfig
from faasd.state import Function

pytestmark = pytest.mark.unit

CONFIG = CFG
FN = Function(name="f", image="img")


class Prepared:
    def __init__(self, factory: Factory, config: WorkerConfig) -> None:
        self.factory = factory
        self.config = config
        self.state = "created"

    async def launch(self, *, ahead: bool = False) -> PoolWorker:
        assert self.state == "created" and ahead
        self.state = "launched"
        raise NotImplementedError  # not called by Spares itself

    async def discard(self) -> None:
        assert self.state == "created"
        self.state = "discarded"


class Factory:
    def __init__(self) -> None:
        self.made: list[Prepared] = []
        self.release: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def start(self, config: WorkerConfig) -> PoolWorker:
        raise NotImplementedError

    async def cleanup_orphans(self) -> list[str]:
        return []

    async def prepare(self, config: WorkerConfig) -> Prepared:
        if self.release is not None:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        p = Prepared(self, config)
        self.made.append(p)
        return p


@contextlib.contextmanager
def open_gate(_fn: Function) -> Iterator[None]:
    yield


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def spares(factory: Factory, ttl_s: float = 60.0) -> Spares:
    assert isinstance(factory, PreparingFactory)
    return Spares(factory, ttl_s)


async def test_a_spare_is_made_once_and_taken_for_the_same_configuration() -> None:
    f = Factory()
    gauge = Gauge("spares", "spares ready", registry=CollectorRegistry())
    assert isinstance(f, PreparingFactory)
    s = Spares(f, 60.0, gauge)
    s.refill(FN, CONFIG, open_gate)
    s.refill(FN, CONFIG, open_gate)  # one is being made: not a second
    await settle()
    s.refill(FN, CONFIG, open_gate)  # one is ready: not a second
    await settle()
    assert len(f.made) == 1 and s.count() == 1
    assert gauge.collect()[0].samples[0].value == 1  # faasd_ephemeral_spares
    assert await s.take("f", CONFIG) is f.made[0]
    assert s.count() == 0 and await s.take("f", CONFIG) is None
    assert gauge.collect()[0].samples[0].value == 0
    await s.close()


async def test_a_spare_made_for_another_configuration_is_discarded() -> None:
    f = Factory()
    s = spares(f)
    s.refill(FN, CONFIG, open_gate)
    await settle()
    changed = dataclasses.replace(CONFIG, secrets={"token": b"new"})
    assert await s.take("f", changed) is None
    await s.close()
    assert [p.state for p in f.made] == ["discarded"]


async def test_an_invocation_waits_for_the_spare_being_made() -> None:
    f = Factory()
    f.release = asyncio.Event()
    s = spares(f)
    s.refill(FN, CONFIG, open_gate)
    taking = asyncio.create_task(s.take("f", CONFIG))
    await settle()
    assert not taking.done()
    f.release.set()
    assert await taking is f.made[0]


async def test_no_spare_when_the_gate_refuses_or_making_fails_or_direct() -> None:
    @contextlib.contextmanager
    def full(_fn: Function) -> Iterator[None]:
        raise FaasdError("quota reached")
        yield

    f = Factory()
    s = spares(f)
    s.refill(FN, CONFIG, full)
    await settle()
    f.fail = RuntimeError("runc create failed")
    s.refill(FN, CONFIG, open_gate)
    await settle()
    import socket

    with socket.socket() as listener:
        s.refill(FN, dataclasses.replace(CONFIG, direct_listener=listener), open_gate)
    await settle()
    assert f.made == [] and s.count() == 0 and await s.take("f", CONFIG) is None


async def test_unused_spares_expire() -> None:
    f = Factory()
    s = spares(f, ttl_s=0.05)
    s.refill(FN, CONFIG, open_gate)
    await settle()
    assert s.count() == 1
    await asyncio.sleep(0.2)
    assert s.count() == 0
    await s.close()
    assert [p.state for p in f.made] == ["discarded"]


async def test_drop_discards_the_spare_and_the_one_being_made() -> None:
    f = Factory()
    s = spares(f)
    s.refill(FN, CONFIG, open_gate)
    await settle()
    await s.drop("f")
    assert [p.state for p in f.made] == ["discarded"]
    f.release = asyncio.Event()
    s.refill(FN, CONFIG, open_gate)  # a new generation being made while the function is dropped again
    dropping = asyncio.create_task(s.drop("f"))
    await settle()
    f.release.set()
    await dropping
    assert [p.state for p in f.made] == ["discarded", "discarded"] and s.count() == 0


async def test_close_discards_everything_and_makes_no_more() -> None:
    f = Factory()
    s = spares(f)
    s.refill(FN, CONFIG, open_gate)
    s.refill(Function(name="g", image="img"), dataclasses.replace(CONFIG, function="g"), open_gate)
    await settle()
    await s.close()
    assert [p.state for p in f.made] == ["discarded", "discarded"]
    s.refill(FN, CONFIG, open_gate)
    await settle()
    assert len(f.made) == 2
