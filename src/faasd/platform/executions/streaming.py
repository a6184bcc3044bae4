"""Streaming invocations: a reserved worker whose output passes on as it arrives (:class:`StreamSession`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from faasd.platform.executions.records import (
    STORED_LOG_LIMIT,
    TIMEOUT_GRACE_S,
    Outcome,
    StreamStart,
    final_status,
)
from faasd.platform.runner import Handle
from faasd.platform.worker_protocol import Invocation, InvocationResult, StreamChunk
from faasd.state import Function

if TYPE_CHECKING:
    from faasd.platform.executions.service import ExecutionService


async def release_handle(handle: Handle, broken: bool) -> None:
    """Release even when the caller is being cancelled (client gone, shutdown): closing a broken worker must
    not be interrupted halfway, or its sandbox would outlive the pool."""
    task = asyncio.ensure_future(handle.release(broken=broken))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=30)
        raise


class StreamSession:
    """A streaming invocation with its worker reserved. Iterate :meth:`events` exactly once."""

    def __init__(self, service: ExecutionService, fn: Function, inv: Invocation, handle: Handle) -> None:
        self.service = service
        self.fn = fn
        self.inv = inv
        self.handle = handle
        self.execution_id = inv.execution_id

    async def events(self) -> AsyncIterator[StreamStart | StreamChunk | Outcome]:
        svc, fn, inv, handle = self.service, self.fn, self.inv, self.handle
        t0 = time.monotonic()
        broken = True
        outcome: Outcome | None = None
        out = bytearray()
        err = bytearray()
        try:
            yield StreamStart(inv.execution_id, handle.cold)
            result: InvocationResult | None = None
            try:
                async with asyncio.timeout(inv.timeout_s + TIMEOUT_GRACE_S):
                    async for ev in handle.worker.invoke_stream(inv):
                        if isinstance(ev, StreamChunk):
                            if ev.stream in ("stdout", "stderr"):
                                (out if ev.stream == "stdout" else err).extend(ev.data[:STORED_LOG_LIMIT])
                            yield ev
                        else:
                            result = ev
            except TimeoutError:
                result = InvocationResult(
                    status=504,
                    timed_out=True,
                    error=f"the function did not finish within {inv.timeout_s:g} s",
                )
            if result is None:
                result = InvocationResult(status=500, error="the worker ended the stream without a result")
            if not result.stdout:
                result.stdout = bytes(out)
            if not result.stderr:
                result.stderr = bytes(err)
            run_ms = result.run_ms if result.run_ms is not None else (time.monotonic() - t0) * 1000
            status = final_status(result)
            broken = result.timed_out or not getattr(handle.worker, "alive", True)
            outcome = Outcome(
                inv.execution_id,
                status,
                result,
                handle.cold,
                handle.init_ms,
                handle.wait_ms,
                run_ms,
                fn.runtime,
            )
            svc._observe(fn.name, status, handle.cold, outcome.duration_ms)
            yield outcome
        finally:
            await release_handle(handle, broken)
            if outcome is not None:
                svc._finish(inv.execution_id, fn.name, outcome)
            else:
                svc._finish(
                    inv.execution_id,
                    fn.name,
                    None,
                    status="failed",
                    error="the stream was interrupted (client disconnected or worker failed)",
                )

    async def aclose(self) -> None:
        await self.handle.release(broken=False)
