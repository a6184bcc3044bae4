"""The execution service: sync invocations, streams and async submissions of deployed functions, with
their ``executions`` records and metrics."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from faasd.errors import CapacityError, FaasdError, InvalidInputError, NotFoundError, ResourceLimitError
from faasd.platform.errors import InvocationTimeoutError
from faasd.platform.executions.async_queue import AsyncQueue
from faasd.platform.executions.journal import ExecutionJournal
from faasd.platform.executions.records import (
    EXECUTION_RETENTION_S,
    STORED_BODY_LIMIT,
    TIMEOUT_GRACE_S,
    ReconcileReport,
    cut,
    forwardable_headers,
    log_text,
    new_execution_id,
)
from faasd.platform.executions.served import plain_row, served_times
from faasd.platform.executions.streaming import StreamSession, release_handle
from faasd.platform.functions import FunctionService
from faasd.platform.invocation import Invocation, Outcome, invoke_request
from faasd.platform.logs import LogService
from faasd.platform.metrics import Metrics
from faasd.platform.runner import FunctionRunner, Handle
from faasd.runtime.agent_client import InvokeRequest, final_result
from faasd.runtime.gateway_channel import HandedRequest
from faasd.state import Database, Execution, Function
from faasd.state.models import utcnow

log = logging.getLogger(__name__)


class ExecutionService:
    def __init__(
        self,
        db: Database,
        functions: FunctionService,
        runner: FunctionRunner,
        logs: LogService,
        metrics: Metrics,
        *,
        max_async_concurrency: int = 16,
        poll_interval_s: float = 1.0,
        callback_timeout_s: float = 10.0,
        max_payload_bytes: int = 6 * 1024 * 1024,
    ) -> None:
        self.db = db
        self.functions = functions
        self.runner = runner
        self.logs = logs
        self.metrics = metrics
        self.max_async_concurrency = max_async_concurrency
        self.poll_interval_s = poll_interval_s
        self.callback_timeout_s = callback_timeout_s
        self.max_payload_bytes = max_payload_bytes
        self.journal = ExecutionJournal(db)
        """Write-behind for sync/stream execution records (see :class:`ExecutionJournal`)."""
        self._fn_query = select(Function.__table__).where(Function.__table__.c.name == bindparam("name"))
        self._fn_cache: dict[str, tuple[int, Function]] = {}
        self._children: dict[tuple[str, str, bool], tuple[Any, Any, Any, Any]] = {}
        """Metric children per (function, status, cold): ``labels()`` is most of a counter's cost."""
        self.queue = AsyncQueue(self)
        """The async invocations (see :class:`AsyncQueue`)."""

    # -- records ------------------------------------------------------------------------------
    def get(self, execution_id: str) -> Execution:
        with self.db.session() as s:
            ex = s.get(Execution, execution_id)
            if ex is None:
                raise NotFoundError(f"execution {execution_id!r} does not exist", id=execution_id)
            return ex

    def list(
        self, function: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Execution]:
        with self.db.session() as s:
            q = select(Execution)
            if function:
                q = q.where(Execution.function == function)
            if status:
                q = q.where(Execution.status == status)
            return list(s.scalars(q.order_by(Execution.created_at.desc()).limit(limit)))

    def _create(
        self, fn: Function, req: InvokeRequest, kind: str, *, status: str, callback_url: str | None = None
    ) -> Execution | None:
        """Record a new execution. Async rows are committed before this returns (the 202 promises
        durability) and returned; sync/stream rows go through the write-behind :attr:`journal`."""
        row = self._row(fn, req, kind, status=status, callback_url=callback_url)
        if kind != "async":
            self.journal.create(row)
            return None
        ex = Execution(**row)
        with self.db.session() as s:
            s.add(ex)
        return ex

    @staticmethod
    def _row(
        fn: Function,
        req: InvokeRequest,
        kind: str,
        *,
        status: str,
        callback_url: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """A new execution's row (the columns a finish sets are the model's defaults)."""
        if kind == "async":
            body, truncated = req.body, False
        else:
            body, truncated = cut(req.body, STORED_BODY_LIMIT)
        now = now or utcnow()
        return {
            "id": req.request_id,
            "function": fn.name,
            "kind": kind,
            "status": status,
            "request_body": body,
            "request_truncated": truncated,
            "request_headers": dict(req.headers),
            "request_path": req.path,
            "request_method": req.method,
            "request_query": req.query,
            "callback_url": callback_url,
            "created_at": now,
            "attempts": 1 if status == "running" else 0,
            "started_at": now if status == "running" else None,
            "not_before": None,
        }

    def finish(
        self,
        ex_id: str,
        fn_name: str,
        outcome: Outcome | None,
        *,
        status: str | None = None,
        error: str | None = None,
        durable: bool = False,
    ) -> None:
        """Record the end of an execution and count the invocation. ``durable`` (async executions):
        committed before this returns; otherwise through the write-behind :attr:`journal`."""
        values = self._finished(outcome, status=status, error=error)
        if durable:
            with self.db.session() as s:
                ex = s.get(Execution, ex_id)
                if ex is None:
                    return
                for k, v in values.items():
                    setattr(ex, k, v)
                fn = s.get(Function, fn_name)
                if fn is not None:
                    fn.invocation_count = (fn.invocation_count or 0) + 1
        else:
            self.journal.finish(ex_id, fn_name, values)
        self._store_output(fn_name, ex_id, outcome)

    @staticmethod
    def _finished(
        outcome: Outcome | None,
        *,
        status: str | None = None,
        error: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """The columns the end of an execution (at ``at``, default now) sets."""
        values: dict[str, Any] = {"finished_at": at or utcnow()}
        if outcome is not None:
            values["result_body"], values["result_truncated"] = cut(outcome.body, STORED_BODY_LIMIT)
            values.update(
                status=outcome.status,
                http_status=outcome.http_status,
                result_headers=dict(outcome.headers),
                error=outcome.error,
                exit_code=outcome.exit_code,
                stdout=log_text(outcome.stdout),
                stderr=log_text(outcome.stderr),
                cold_start=outcome.cold,
                init_ms=outcome.init_ms,
                wait_ms=outcome.wait_ms,
                run_ms=outcome.run_ms,
            )
        else:
            values.update(status=status or "failed", error=error)
        return values

    def _store_output(self, fn_name: str, ex_id: str, outcome: Outcome | None) -> None:
        if outcome is not None and (outcome.stdout or outcome.stderr):
            try:
                # a session: the journal writes the execution row first (log lines reference it)
                self.logs.append(fn_name, ex_id, None, outcome.stdout, outcome.stderr)
            except Exception:
                log.exception("storing log lines of %s failed", ex_id)

    def function_record(self, name: str) -> Function:
        """The function record for an invocation, read with one Core ``SELECT`` (a fraction of an ORM
        session's cost) into a detached :class:`Function`. Not through a session on purpose: that would
        flush the journal on every request and defeat its batching (only ``invocation_count`` /
        ``updated_at`` may lag here, and an invocation reads neither). Unknown names go through
        :meth:`FunctionService.get`, which raises the 404. Records are cached until the function service
        changes any function (its ``generation``), so the warm path reads no database at all."""
        generation = self.functions.generation
        cached = self._fn_cache.get(name)
        if cached is not None and cached[0] == generation:
            return cached[1]
        with self.db.engine.connect() as conn:
            row = conn.execute(self._fn_query, {"name": name}).first()
        if row is None:
            self._fn_cache.pop(name, None)
            return self.functions.get(name)
        fn = Function(**row._mapping)
        if len(self._fn_cache) > 4096:
            self._fn_cache.clear()
        self._fn_cache[name] = (generation, fn)
        return fn

    # -- the invocation itself ----------------------------------------------------------------
    def _request(self, fn: Function, inv: Invocation, ex_id: str) -> InvokeRequest:
        """The runtime's request for an invocation of ``fn``: only :func:`forwardable_headers`, the
        function's timeout, the execution id as request id."""
        return invoke_request(
            inv, headers=forwardable_headers(inv.headers), timeout_s=fn.timeout_s, request_id=ex_id
        )

    async def _invoke_on(self, handle: Handle, req: InvokeRequest, timeout_s: float) -> Outcome:
        """The worker's answer to ``req``; a limit that ended it and the host's backstop timeout are
        outcomes too (the caller records them)."""
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s + TIMEOUT_GRACE_S):
                result = await handle.worker.invoke(req)
        except TimeoutError:
            return Outcome.timeout(
                f"the function did not answer within its timeout of {timeout_s:g} s",
                wall_ms=(time.monotonic() - t0) * 1000,
            )
        except ResourceLimitError as exc:
            return Outcome.of_limit(exc, wall_ms=(time.monotonic() - t0) * 1000)
        return Outcome.of_result(result, wall_ms=(time.monotonic() - t0) * 1000)

    async def run(self, fn: Function, req: InvokeRequest) -> Outcome:
        handle = await self.runner.acquire(fn, timeout_s=max(fn.timeout_s, 1.0))
        broken = True
        try:
            outcome = await self._invoke_on(handle, req, fn.timeout_s)
            broken = outcome.timed_out or not handle.worker.alive
        finally:
            await release_handle(handle, broken)
        return self.ran(outcome, fn, handle, req.request_id)

    def ran(self, outcome: Outcome, fn: Function, handle: Handle, ex_id: str) -> Outcome:
        """Complete ``outcome`` with how it ran (execution, cold start, timings) and count it."""
        return self._complete(
            outcome, fn, ex_id, cold=handle.cold, init_ms=handle.init_ms, wait_ms=handle.wait_ms
        )

    def _complete(
        self, outcome: Outcome, fn: Function, ex_id: str, *, cold: bool, init_ms: float, wait_ms: float
    ) -> Outcome:
        outcome.execution_id = ex_id
        outcome.cold = cold
        outcome.init_ms = init_ms
        outcome.wait_ms = wait_ms
        outcome.runtime = fn.runtime
        self._observe(fn.name, outcome.status, cold, outcome.duration_ms)
        return outcome

    def _observe(self, name: str, status: str, cold: bool, *durations_ms: float) -> None:
        """Count invocations of ``name`` that ended with ``status``, one per duration."""
        key = (name, status, cold)
        children = self._children.get(key)
        if children is None:
            m = self.metrics
            if len(self._children) > 16384:
                self._children.clear()
            children = self._children[key] = (
                m.invocations.labels(name, status),
                m.duration.labels(name),
                (m.cold_starts if cold else m.warm_starts).labels(name),
                m.errors.labels("function_" + status) if status != "succeeded" else None,
            )
        invocations, duration, starts, errors = children
        n = len(durations_ms)
        invocations.inc(n)
        for ms in durations_ms:
            duration.observe(ms / 1000)
        starts.inc(n)
        if errors is not None:
            errors.inc(n)

    async def invoke(self, name: str, inv: Invocation) -> Outcome:
        """Synchronous invocation. Raises :class:`InvocationTimeoutError` (504) after recording a time-out."""
        fn = self.function_record(name)
        req = self._request(fn, inv, new_execution_id())
        ex_id = req.request_id
        self._create(fn, req, "sync", status="running")
        try:
            outcome = await self.run(fn, req)
        except CapacityError:
            self.metrics.invocations.labels(name, "rejected").inc()
            self.metrics.errors.labels(CapacityError.code).inc()
            self.finish(ex_id, name, None, status="failed", error="rejected: pool saturated (429)")
            raise
        except FaasdError as exc:
            self.metrics.errors.labels(exc.code).inc()
            self.finish(ex_id, name, None, status="failed", error=exc.message)
            raise
        except BaseException as exc:
            self.finish(ex_id, name, None, status="failed", error=f"internal error: {exc!r}")
            raise
        self.finish(ex_id, name, outcome)
        if outcome.status == "timeout":
            raise self._timed_out(fn, ex_id)
        return outcome

    @staticmethod
    def _timed_out(fn: Function, ex_id: str) -> InvocationTimeoutError:
        return InvocationTimeoutError(
            f"function {fn.name!r} did not finish within its timeout of {fn.timeout_s:g} s; the worker was "
            "stopped. Raise limits.timeout_s or make the function faster",
            execution_id=ex_id,
            timeout_s=fn.timeout_s,
        )

    def record_served(
        self, name: str, served: builtins.list[tuple[HandedRequest, str]]
    ) -> builtins.list[int]:
        """Record, in bulk, the requests of one worker report (each with the function path its route
        matched) that the worker answered plainly (:func:`~faasd.platform.executions.served.plain_row`):
        the rows and metrics :meth:`record_handed` makes for them, for a fraction of its CPU (the daemon's
        part of every handed request). Returns the indexes of the others, for :meth:`record_handed`."""
        try:
            fn = self.function_record(name)
        except FaasdError:
            return builtins.list(range(len(served)))  # record_handed reports it for each
        rows: builtins.list[dict[str, Any]] = []
        run_ms: dict[str, builtins.list[float]] = {}
        left: builtins.list[int] = []
        for i, (handed, path) in enumerate(served):
            row = plain_row(fn.name, handed, path)
            if row is None:
                left.append(i)
                continue
            rows.append(row)
            run_ms.setdefault(row["status"], []).append(row["run_ms"])
        for status, durations in run_ms.items():
            self._observe(fn.name, status, False, *durations)
        self.journal.done_many(rows, name)
        return left

    def record_handed(
        self, name: str, inv: Invocation, handed: HandedRequest, *, output_limit: int
    ) -> Outcome:
        """Record an invocation a warm worker served itself, on a client connection the gateway handed
        over (:mod:`faasd.runtime.gateway_channel`): the same execution record and metrics as
        :meth:`invoke`, from what the worker reported. Raises as :meth:`invoke` does when the function
        timed out or the agent refused the request (the gateway then answers that error)."""
        fn = self.function_record(name)
        req = self._request(fn, inv, handed.id)
        started, ended = served_times(handed)
        row = self._row(fn, req, "sync", status="running", now=started)
        truncated = len(handed.stdout) >= output_limit or len(handed.stderr) >= output_limit
        try:
            result = final_result(
                handed.final,
                handed.result,
                stdout=handed.stdout,
                stderr=handed.stderr,
                output_truncated=truncated,
                total_ms=handed.wall_ms,
                request=req,
            )
            outcome = Outcome.of_result(result, wall_ms=handed.wall_ms)
        except ResourceLimitError as exc:
            outcome = Outcome.of_limit(exc, wall_ms=handed.wall_ms)
        except FaasdError as exc:
            self.metrics.errors.labels(exc.code).inc()
            row.update(self._finished(None, status="failed", error=exc.message, at=ended))
            self.journal.done(row, name)
            raise
        self._complete(outcome, fn, handed.id, cold=False, init_ms=0.0, wait_ms=0.0)
        row.update(self._finished(outcome, at=ended))
        self.journal.done(row, name)  # created and finished in one INSERT
        self._store_output(name, handed.id, outcome)
        if outcome.status == "timeout":
            raise self._timed_out(fn, handed.id)
        return outcome

    # -- streaming ----------------------------------------------------------------------------
    async def open_stream(self, name: str, inv: Invocation) -> StreamSession:
        """Reserve a worker (so 404/429 surface before the stream starts) and return the session."""
        fn = self.function_record(name)
        req = self._request(fn, inv, new_execution_id())
        self._create(fn, req, "stream", status="running")
        try:
            handle = await self.runner.acquire(fn, timeout_s=max(fn.timeout_s, 1.0))
        except FaasdError as exc:
            self.metrics.errors.labels(exc.code).inc()
            self.finish(req.request_id, name, None, status="failed", error=exc.message)
            raise
        return StreamSession(self, fn, req, handle)

    # -- async --------------------------------------------------------------------------------
    def submit(self, name: str, inv: Invocation, callback_url: str | None = None) -> Execution:
        """Persist an async invocation (status ``queued``) and wake the loop. Durable before returning."""
        fn = self.functions.get(name)
        if callback_url is not None and not callback_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"callback URL {callback_url!r} must be an http:// or https:// URL")
        req = self._request(fn, inv, new_execution_id())
        ex = self._create(fn, req, "async", status="queued", callback_url=callback_url)
        assert ex is not None
        self.queue.wake()
        return ex

    def reconcile(self) -> ReconcileReport:
        """See :meth:`AsyncQueue.reconcile`."""
        return self.queue.reconcile()

    def prune(self, older_than_s: float = EXECUTION_RETENTION_S) -> int:
        """Delete finished executions older than ``older_than_s``; returns how many."""
        return self.queue.prune(older_than_s)

    def queued_count(self) -> int:
        return self.queue.queued_count()

    async def drain_once(self) -> int:
        """Claim and start as many queued executions as there is room for; returns how many started."""
        return await self.queue.drain_once()

    def start(self) -> None:
        self.queue.start()

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing is queued or running (tests, graceful shutdown)."""
        await self.queue.wait_idle(timeout_s)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the async loop (see :meth:`AsyncQueue.stop`) and write the journal."""
        await self.queue.stop(grace_s)
