"""Streaming invocations: a reserved worker whose output passes on as it arrives (:class:`StreamSession`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from faasd.errors import ResourceLimitError
from faasd.platform.executions.host import ExecutionHost
from faasd.platform.executions.records import STORED_LOG_LIMIT, TIMEOUT_GRACE_S, StreamStart
from faasd.platform.invocation import Outcome
from faasd.platform.runner import Handle
from faasd.runtime.agent_client import InvokeRequest, InvokeResult, StreamChunk
from faasd.state import Function


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

    def __init__(self, service: ExecutionHost, fn: Function, req: InvokeRequest, handle: Handle) -> None:
        self.service = service
        self.fn = fn
        self.req = req
        self.handle = handle
        self.execution_id = req.request_id

    async def events(self) -> AsyncIterator[StreamStart | StreamChunk | Outcome]:
        svc, fn, req, handle = self.service, self.fn, self.req, self.handle
        ex_id = self.execution_id
        t0 = time.monotonic()
        broken = True
        outcome: Outcome | None = None
        out = bytearray()
        err = bytearray()
        try:
            yield StreamStart(ex_id, handle.cold)
            result: InvokeResult | None = None
            limit: ResourceLimitError | None = None
            timed_out = False
            try:
                async with asyncio.timeout(fn.timeout_s + TIMEOUT_GRACE_S):
                    async for ev in handle.worker.invoke_stream(req):
                        if isinstance(ev, StreamChunk):
                            if ev.stream in ("stdout", "stderr"):
                                (out if ev.stream == "stdout" else err).extend(ev.data[:STORED_LOG_LIMIT])
                            yield ev
                        else:
                            result = ev
            except TimeoutError:
                timed_out = True
            except ResourceLimitError as exc:
                limit = exc
            wall_ms = (time.monotonic() - t0) * 1000
            if timed_out:
                ended = Outcome.timeout(
                    f"the function did not finish within {fn.timeout_s:g} s", wall_ms=wall_ms
                )
            elif limit is not None:
                ended = Outcome.of_limit(limit, wall_ms=wall_ms)
            elif result is not None:
                ended = Outcome.of_result(result, wall_ms=wall_ms)
            else:
                ended = Outcome(
                    http_status=500, error="the worker ended the stream without a result", run_ms=wall_ms
                )
            if not ended.stdout:
                ended.stdout = bytes(out)
            if not ended.stderr:
                ended.stderr = bytes(err)
            broken = ended.timed_out or not handle.worker.alive
            outcome = svc.ran(ended, fn, handle, ex_id)
            yield outcome
        finally:
            await release_handle(handle, broken)
            if outcome is not None:
                svc.finish(ex_id, fn.name, outcome)
            else:
                svc.finish(
                    ex_id,
                    fn.name,
                    None,
                    status="failed",
                    error="the stream was interrupted (client disconnected or worker failed)",
                )

    async def aclose(self) -> None:
        await self.handle.release(broken=False)
