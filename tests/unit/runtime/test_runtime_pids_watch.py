"""PidsWatch: a request ends with pids_exhausted once the sandbox's counter rises, and only then."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from faasd.errors import PidsExhaustedError
from faasd.runtime.agent_client import InvokeEvent, InvokeResult, StreamChunk
from faasd.runtime.workers.pids_watch import PidsWatch

pytestmark = pytest.mark.unit

RESULT = InvokeResult(200, [], b"ok")


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0

    def read(self) -> int:
        return self.value


class FakeSandbox:
    def __init__(self) -> None:
        self.killed = 0

    async def kill(self) -> None:
        self.killed += 1


async def answer(after: asyncio.Future[None] | None = None) -> AsyncIterator[InvokeEvent]:
    yield StreamChunk("stdout", b"x")
    if after is not None:
        await after  # until the test lets it finish (or for ever)
    yield RESULT


def watch() -> tuple[PidsWatch, FakeCounter, FakeSandbox]:
    counter, sandbox = FakeCounter(), FakeSandbox()
    return PidsWatch(counter, sandbox, 64), counter, sandbox


async def test_a_quiet_request_returns_its_result() -> None:
    w, _, sandbox = watch()
    assert await w.result(answer()) is RESULT
    assert [e async for e in w.stream(answer())][-1] is RESULT
    assert sandbox.killed == 0


@pytest.mark.parametrize("mode", ["result", "stream"])
async def test_a_fork_failing_on_the_limit_ends_a_hung_request(mode: str) -> None:
    w, counter, sandbox = watch()
    hung: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run() -> object:
        if mode == "result":
            return await w.result(answer(hung))
        return [e async for e in w.stream(answer(hung))]

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.01)
    counter.value = 1  # a fork failed on the limit
    with pytest.raises(PidsExhaustedError) as err:
        await asyncio.wait_for(task, 5)
    assert err.value.details["worker_usable"] is False
    assert sandbox.killed == 1
    assert not task.cancelled()


async def test_a_limit_hit_by_the_time_the_result_came_still_counts() -> None:
    w, counter, sandbox = watch()

    async def forked_then_answered() -> AsyncIterator[InvokeEvent]:
        counter.value = 1
        yield RESULT

    with pytest.raises(PidsExhaustedError):
        await w.result(forked_then_answered())
    assert sandbox.killed == 1


async def test_the_callers_own_cancel_is_a_cancel_not_pids_exhausted() -> None:
    w, _, sandbox = watch()
    hung: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(w.result(answer(hung)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sandbox.killed == 0
