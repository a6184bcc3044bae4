"""Watching one request against its sandbox's pids limit (:class:`PidsWatch`).

A fork that fails on the pids limit is how a fork bomb shows itself; the request then ends at once with
``pids_exhausted`` (its sandbox killed: the processes it forked cannot be told apart from the agent's, so
the worker is recycled) instead of running into its time-out. The counter (``pids.events``, one ``pread``)
is read every :data:`~faasd.runtime.sandbox.PIDS_POLL_S` while the request runs and once more when its
result arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol

from faasd.errors import ResourceLimitError, pids_exhausted
from faasd.runtime.agent_client import InvokeEvent, InvokeResult
from faasd.runtime.sandbox import PIDS_POLL_S, pids_limit_hit
from faasd.runtime.sandbox.limits import PidsReader


class Killable(Protocol):
    """What is killed when the limit is hit (the worker's ``Sandbox``)."""

    async def kill(self) -> None: ...


class PidsWatch:
    """Ends a worker's requests with ``pids_exhausted`` once a fork in its sandbox failed on the limit."""

    def __init__(self, counter: PidsReader, sandbox: Killable, pids_limit: int | None) -> None:
        self._counter = counter
        self._sandbox = sandbox
        self._limit = pids_limit

    async def result(self, events: AsyncIterator[InvokeEvent]) -> InvokeResult:
        """The :class:`InvokeResult` of ``events``, watched in the calling task with no task, queue or
        future per request: a timer reads the counter every :data:`PIDS_POLL_S` and, once a fork failed on
        the limit, cancels this task (told apart from anybody else's cancel as ``asyncio.timeout`` does)."""
        counter = self._counter
        baseline = counter.read()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        seen: list[float] = []
        timer: asyncio.TimerHandle | None = None

        def poll() -> None:
            nonlocal timer
            if counter.read() > baseline:
                seen.append(time.monotonic())
                task.cancel()
            else:
                timer = loop.call_later(PIDS_POLL_S, poll)

        timer = loop.call_later(PIDS_POLL_S, poll)
        result: InvokeResult | None = None
        try:
            async for event in events:
                if isinstance(event, InvokeResult):
                    result = event
        except asyncio.CancelledError:
            if seen and task.uncancel() == 0:  # ours alone: the limit was hit
                raise await self._exhausted(seen[0], started) from None
            raise
        except Exception as exc:
            if counter.read() > baseline:
                raise await self._exhausted(time.monotonic(), started) from exc
            raise
        finally:
            timer.cancel()
        if seen:  # hit as the result came (the cancel was swallowed on the way): it was ours
            task.uncancel()
        if seen or counter.read() > baseline:
            raise await self._exhausted(seen[0] if seen else time.monotonic(), started)
        assert result is not None
        return result

    async def stream(self, events: AsyncIterator[InvokeEvent]) -> AsyncIterator[InvokeEvent]:
        """Pass ``events`` on, but end the stream with ``pids_exhausted`` as soon as the limit is hit, or if
        it was by the time the result arrives.

        The request runs in a task of its own that feeds a queue (events reach the caller between reads,
        so the caller's task cannot be the one cancelled), and this generator races it against the
        counter; the request keeps one task context (``asyncio.timeout`` inside)."""
        counter = self._counter
        baseline = counter.read()
        started = time.monotonic()
        queue: asyncio.Queue[tuple[InvokeEvent | None, BaseException | None]] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for ev in events:
                    queue.put_nowait((ev, None))
                queue.put_nowait((None, None))
            except Exception as exc:
                queue.put_nowait((None, exc))

        producer = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(pids_limit_hit(counter, baseline))
        getter: asyncio.Future[tuple[InvokeEvent | None, BaseException | None]] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    raise await self._exhausted(watcher.result(), started)
                event, error = getter.result()
                if error is not None:
                    if counter.read() > baseline:
                        raise await self._exhausted(time.monotonic(), started) from error
                    raise error
                if event is None:
                    return
                if isinstance(event, InvokeResult) and counter.read() > baseline:
                    raise await self._exhausted(time.monotonic(), started)  # hit and over before a poll
                yield event
        finally:
            watcher.cancel()
            if getter is not None:
                getter.cancel()
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(BaseException):
                    await producer

    async def _exhausted(self, seen_at: float, started: float) -> ResourceLimitError:
        # the fork bomb goes with its sandbox at once (SIGKILL of init ends the pid namespace); the worker
        # is closed by the failure handling, which then need not wait for it to die
        await self._sandbox.kill()
        return pids_exhausted(
            self._limit,
            "the invocation",
            worker_usable=False,
            detected_ms=round((seen_at - started) * 1000, 3),
        )
