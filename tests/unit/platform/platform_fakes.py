"""Test doubles for the worker seam (:class:`faasd.platform.worker_protocol.PoolWorker` / ``WorkerFactory``).

Unit tests of orchestration logic only: integration tests use the real runtime.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

from faasd.errors import ResourceLimitError
from faasd.platform.worker_protocol import WorkerConfig
from faasd.runtime.agent_client import FunctionError, InvokeEvent, InvokeRequest, InvokeResult, StreamChunk

_ids = itertools.count(1)


CFG = WorkerConfig(  # a function's worker configuration for tests that need one
    function="f",
    image="img",
    runtime="python",
    handler="handler.handle",
    command=None,
    port=None,
    env={},
    secrets={},
    memory_mb=128,
    cpu_cores=1,
    pids=64,
    timeout_s=5,
    disk_mb=64,
)


class FakeWorker:
    def __init__(self, factory: FakeFactory, config: WorkerConfig) -> None:
        self.id = f"fake-{next(_ids)}"
        self.factory = factory
        self.config = config
        self.closed = False
        self.calls = 0

    @property
    def alive(self) -> bool:
        return True

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        assert not self.closed, "invoke on a closed worker"
        self.calls += 1
        self.factory.active += 1
        self.factory.peak = max(self.factory.peak, self.factory.active)
        try:
            if self.factory.gate is not None:
                await self.factory.gate.wait()
            return self.factory.behaviour(self, request)
        finally:
            self.factory.active -= 1

    async def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        for part in request.body.split(b" "):
            yield StreamChunk("stdout", part + b"\n")
        yield StreamChunk("stderr", b"done\n")
        yield InvokeResult(
            status=200, body=request.body.upper(), headers=[("content-type", "text/plain")]
        )

    async def close(self) -> None:
        if self.factory.close_gate is not None:
            await self.factory.close_gate.wait()
        self.closed = True
        self.factory.closed.append(self.id)


def echo(worker: FakeWorker, inv: InvokeRequest) -> InvokeResult:
    if inv.body == b"raise":
        return InvokeResult(
            status=500,
            headers=[],
            body=b"",
            error=FunctionError(kind="exception", message="ValueError: boom"),
            stderr=b"Traceback...\nValueError: boom\n",
        )
    if inv.body == b"slow":
        raise ResourceLimitError("timed out", limit="timeout", worker_usable=False)
    return InvokeResult(
        status=200,
        body=b"echo:" + inv.body,
        headers=[("content-type", "text/plain")],
        stdout=b"line1\nline2\n",
        stderr=b"warn\n",
    )


class FakeFactory:
    def __init__(self) -> None:
        self.started: list[FakeWorker] = []
        self.closed: list[str] = []
        self.active = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None
        self.close_gate: asyncio.Event | None = None
        """Set: closing a worker waits for it (a slow sandbox teardown)."""
        self.behaviour: Callable[[FakeWorker, InvokeRequest], InvokeResult] = echo
        self.fail_start: Exception | None = None
        self.orphans: list[str] = []
        self.start_delay = 0.0

    async def start(self, config: WorkerConfig) -> FakeWorker:
        if self.fail_start is not None:
            raise self.fail_start
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        w = FakeWorker(self, config)
        self.started.append(w)
        return w

    async def cleanup_orphans(self) -> list[str]:
        out, self.orphans = self.orphans, []
        return out

    @property
    def live(self) -> int:
        return len(self.started) - len(self.closed)
