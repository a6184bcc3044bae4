"""Executions: sync, async (persisted before 202, drained by a background loop) and streaming invocations.

Every invocation gets an ``executions`` row. Async rows are written with the full request before the
caller gets its 202, so a crash loses nothing: :meth:`ExecutionService.reconcile` re-queues rows a dead
daemon left ``running`` (and fails sync ones with a clear reason).

Sync and stream rows (and ``functions.invocation_count``) are written behind the hot path by
:class:`ExecutionJournal`: batched, in order, at most :data:`JOURNAL_DELAY_S` later, before any database
session is opened (so every read sees them) and at shutdown. A daemon crash can lose only the last
:data:`JOURNAL_DELAY_S` of sync/stream records, whose callers lose their connection anyway.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from faasd.errors import CapacityError, FaasdError, InvalidInputError, NotFoundError
from faasd.platform.errors import InvocationTimeoutError
from faasd.platform.functions import FunctionService
from faasd.platform.logs import LogService
from faasd.platform.metrics import Metrics
from faasd.platform.runner import FunctionRunner, Handle
from faasd.platform.workers import Invocation, InvocationResult, StreamChunk
from faasd.state import Database, Execution, Function
from faasd.state.models import iso, utcnow

log = logging.getLogger(__name__)

STORED_BODY_LIMIT = 1024 * 1024
"""Sync request bodies and all results are stored up to this size (async requests are stored in full)."""
STORED_LOG_LIMIT = 256 * 1024
MAX_ASYNC_ATTEMPTS = 3
EXECUTION_RETENTION_S = 7 * 86400
"""Finished executions older than this are deleted (checked every :data:`PRUNE_INTERVAL_S`)."""
PRUNE_INTERVAL_S = 600.0
TIMEOUT_GRACE_S = 5.0
FORWARDED_HEADER_PREFIXES = ("x-", "content-type", "accept", "user-agent", "authorization-function")


def new_execution_id() -> str:
    return "ex_" + secrets.token_hex(12)


def forwardable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers handed to the function: content negotiation and X-* (never the caller's credentials)."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        lk = k.lower()
        if lk in ("authorization", "cookie", "x-callback-url"):
            continue
        if lk.startswith(FORWARDED_HEADER_PREFIXES):
            out[lk] = v
    return out


def _cut(data: bytes, limit: int) -> tuple[bytes, bool]:
    return (data, False) if len(data) <= limit else (data[:limit], True)


def _text(data: bytes, limit: int = STORED_LOG_LIMIT) -> str:
    return data[:limit].decode("utf-8", "replace")


def encode_body(data: bytes | None) -> tuple[str | None, str]:
    if data is None:
        return None, "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def execution_dict(ex: Execution) -> dict[str, Any]:
    result, enc = encode_body(ex.result_body)
    return {
        "id": ex.id,
        "function": ex.function,
        "kind": ex.kind,
        "status": ex.status,
        "http_status": ex.http_status,
        "result": result,
        "result_encoding": enc,
        "result_truncated": ex.result_truncated,
        "request_truncated": ex.request_truncated,
        "error": ex.error,
        "exit_code": ex.exit_code,
        "cold_start": ex.cold_start,
        "init_ms": ex.init_ms,
        "wait_ms": ex.wait_ms,
        "run_ms": ex.run_ms,
        "callback_url": ex.callback_url,
        "attempts": ex.attempts,
        "created_at": iso(ex.created_at),
        "started_at": iso(ex.started_at),
        "finished_at": iso(ex.finished_at),
    }


# -- write-behind journal for sync/stream execution records -----------------------------------------
JOURNAL_DELAY_S = 0.05
"""How long a sync/stream execution record may wait in memory before it is written (batched)."""
JOURNAL_MAX_PENDING = 512
"""Pending operations that trigger an immediate write."""
JOURNAL_MAX_BYTES = 8 * 1024 * 1024
"""Pending request/result bodies (bytes) that trigger an immediate write (bounds the buffer's memory)."""
JOURNAL_RETRY_S = 1.0
JOURNAL_MAX_BUFFER = 100_000
"""Beyond this many unwritten operations (database down for a long time) the oldest are dropped."""

_FINISH_DEFAULTS: dict[str, Any] = {
    "finished_at": None,
    "http_status": None,
    "result_body": None,
    "result_truncated": False,
    "result_headers": {},
    "error": None,
    "exit_code": None,
    "stdout": "",
    "stderr": "",
    "cold_start": None,
    "init_ms": None,
    "wait_ms": None,
    "run_ms": None,
}
"""Columns a finish may set, with the model's defaults (every inserted row carries all of them so that
one ``executemany`` INSERT fits a whole batch)."""


class ExecutionJournal:
    """Write-behind buffer for the ``executions`` rows of **sync and stream** invocations.

    The sync hot path only appends to an in-memory list; the rows are written in batches (one
    transaction, Core ``executemany``) at most :data:`JOURNAL_DELAY_S` later, and a create and a finish
    of the same execution that meet in one batch become a single INSERT of the final row. Per function,
    ``invocation_count`` is bumped once per batch by the number of finished invocations.

    Guarantees:

    * **Order and read-your-writes.** Operations are written in the order they were recorded. The
      journal is registered as a :meth:`Database.add_before_session` hook, so *every* ORM session
      (the API's execution/function reads, direct writes such as async records, prune, tests) first
      writes whatever is pending: nobody reading through a session sees a stale record or count.
    * **Shutdown.** :meth:`close` (called by :meth:`ExecutionService.stop`, and ``Platform.close``
      flushes again at its very end) writes everything; records made after ``close`` are written at
      once.
    * **Crash.** A daemon crash loses at most the last :data:`JOURNAL_DELAY_S` of *sync/stream*
      records (their callers lose their connection anyway; rows already written ``running`` are failed
      by :meth:`ExecutionService.reconcile` as before). **Async invocations never go through the
      journal**: their rows are written (and committed) before the 202, and their results are written
      directly, as before.
    """

    def __init__(self, db: Database, *, delay_s: float = JOURNAL_DELAY_S) -> None:
        self.db = db
        self.delay_s = delay_s
        self._ops: builtins.list[tuple[str, str, dict[str, Any]]] = []
        self._bytes = 0
        self._lock = threading.RLock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.batches_written = 0
        table = cast(Table, Execution.__table__)
        self._insert = insert(table)
        self._updates: dict[tuple[str, ...], Any] = {}
        self._table = table
        ft = cast(Table, Function.__table__)
        self._count = (
            update(ft)
            .where(ft.c.name == bindparam("_name"))
            .values(invocation_count=func.coalesce(ft.c.invocation_count, 0) + bindparam("_n"))
        )
        db.add_before_session(self._before_session)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._ops)

    # -- recording (event loop or any thread) --------------------------------------------------
    def create(self, row: dict[str, Any]) -> None:
        self._record(("create", str(row["id"]), row))

    def finish(self, ex_id: str, function: str, values: dict[str, Any]) -> None:
        self._record(("finish", ex_id, {**values, "_function": function}))

    def _record(self, op: tuple[str, str, dict[str, Any]]) -> None:
        values = op[2]
        size = len(values.get("request_body") or b"") + len(values.get("result_body") or b"")
        with self._lock:
            self._ops.append(op)
            self._bytes += size
            n, total = len(self._ops), self._bytes
        if self._closed or n >= JOURNAL_MAX_PENDING or total >= JOURNAL_MAX_BYTES:
            self.flush()
            return
        self._schedule(self.delay_s)

    def _schedule(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in an event loop thread: write now
            self.flush()
            return
        if self._timer is not None and self._timer_loop is loop:
            return
        self._timer_loop = loop
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.flush() and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(JOURNAL_RETRY_S, self._on_timer)

    def _before_session(self) -> None:
        self.flush()

    # -- writing ---------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Write everything recorded so far (synchronously, in the caller's thread). Returns False when
        the database refused the batch: it is kept (in order) and retried by the timer or next flush."""
        with self._lock:  # held while writing: a concurrent reader waits until the rows are there
            if not self._ops:
                return True
            ops, self._ops = self._ops, []
            self._bytes = 0
            try:
                try:
                    self._write(ops)
                except IntegrityError:
                    self._write_one_by_one(ops)
            except Exception:
                log.exception("writing %d execution record(s) failed; will retry", len(ops))
                self._ops[:0] = ops
                if len(self._ops) > JOURNAL_MAX_BUFFER:
                    dropped = len(self._ops) - JOURNAL_MAX_BUFFER
                    del self._ops[:dropped]
                    log.error("dropped the %d oldest unwritten execution record(s)", dropped)
                return False
            return True

    def _write_one_by_one(self, ops: builtins.list[tuple[str, str, dict[str, Any]]]) -> None:
        for op in ops:
            try:
                self._write([op])
            except Exception:
                log.exception("cannot write execution record %s (%s); dropped", op[1], op[0])

    def _write(self, ops: builtins.list[tuple[str, str, dict[str, Any]]]) -> None:
        inserts: dict[str, dict[str, Any]] = {}
        updates: builtins.list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for kind, ex_id, values in ops:
            if kind == "create":
                inserts[ex_id] = {**_FINISH_DEFAULTS, **values}
                continue
            vals = dict(values)
            fn_name = vals.pop("_function")
            counts[fn_name] = counts.get(fn_name, 0) + 1
            row = inserts.get(ex_id)
            if row is not None:
                row.update(vals)
            else:
                updates.append({"_id": ex_id, **vals})
        t = self._table
        with self.db.engine.begin() as conn:
            if inserts:
                conn.execute(self._insert, list(inserts.values()))
            by_shape: dict[tuple[str, ...], builtins.list[dict[str, Any]]] = {}
            for u in updates:
                by_shape.setdefault(tuple(sorted(k for k in u if k != "_id")), []).append(u)
            for shape, params in by_shape.items():
                stmt = self._updates.get(shape)
                if stmt is None:
                    stmt = self._updates[shape] = (
                        update(t).where(t.c.id == bindparam("_id")).values({k: bindparam(k) for k in shape})
                    )
                conn.execute(stmt, params)
            if counts:
                conn.execute(self._count, [{"_name": k, "_n": n} for k, n in counts.items()])
        self.batches_written += 1

    def reopen(self) -> None:
        """Buffer again after :meth:`close` (the service was restarted)."""
        self._closed = False

    def close(self) -> None:
        """Write everything and write later records at once. Idempotent; keeps the session hook (so a
        record made after close is still visible to readers)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


async def _release(handle: Handle, broken: bool) -> None:
    """Release even when the caller is being cancelled (client gone, shutdown): closing a broken worker must
    not be interrupted halfway, or its sandbox would outlive the pool."""
    task = asyncio.ensure_future(handle.release(broken=broken))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=30)
        raise


def final_status(result: InvocationResult) -> str:
    if result.timed_out:
        return "timeout"
    if result.error is not None or result.status >= 500:
        return "failed"
    return "succeeded"


@dataclass
class Outcome:
    """A finished invocation as the API sees it."""

    execution_id: str
    status: str
    result: InvocationResult
    cold: bool
    init_ms: float
    wait_ms: float
    run_ms: float
    runtime: str = ""
    """The function's runtime (``python``, ``http``, ...): how the API shapes the response."""

    @property
    def duration_ms(self) -> float:
        return self.init_ms + self.wait_ms + self.run_ms


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StreamStart:
    execution_id: str
    cold: bool


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
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.journal = ExecutionJournal(db)
        """Write-behind for sync/stream execution records (see :class:`ExecutionJournal`)."""
        self._fn_query = select(Function.__table__).where(Function.__table__.c.name == bindparam("name"))
        self._fn_cache: dict[str, tuple[int, Function]] = {}

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
        self, fn: Function, inv: Invocation, kind: str, *, status: str, callback_url: str | None = None
    ) -> Execution | None:
        """Record a new execution. Async rows are committed before this returns (the 202 promises
        durability) and returned; sync/stream rows go through the write-behind :attr:`journal`."""
        if kind == "async":
            body, truncated = inv.body, False
        else:
            body, truncated = _cut(inv.body, STORED_BODY_LIMIT)
        now = utcnow()
        row: dict[str, Any] = {
            "id": inv.execution_id or new_execution_id(),
            "function": fn.name,
            "kind": kind,
            "status": status,
            "request_body": body,
            "request_truncated": truncated,
            "request_headers": dict(inv.headers),
            "request_path": inv.path,
            "request_method": inv.method,
            "request_query": inv.query,
            "callback_url": callback_url,
            "created_at": now,
            "attempts": 1 if status == "running" else 0,
            "started_at": now if status == "running" else None,
            "not_before": None,
        }
        if kind != "async":
            self.journal.create(row)
            return None
        ex = Execution(**row)
        with self.db.session() as s:
            s.add(ex)
        return ex

    def _finish(
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
        values: dict[str, Any] = {"finished_at": utcnow()}
        if outcome is not None:
            r = outcome.result
            values["result_body"], values["result_truncated"] = _cut(r.body, STORED_BODY_LIMIT)
            values.update(
                status=outcome.status,
                http_status=r.status,
                result_headers=dict(r.headers),
                error=r.error,
                exit_code=r.exit_code,
                stdout=_text(r.stdout),
                stderr=_text(r.stderr),
                cold_start=outcome.cold,
                init_ms=outcome.init_ms,
                wait_ms=outcome.wait_ms,
                run_ms=outcome.run_ms,
            )
        else:
            values.update(status=status or "failed", error=error)
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
        if outcome is not None and (outcome.result.stdout or outcome.result.stderr):
            try:
                # a session: the journal writes the execution row first (log lines reference it)
                self.logs.append(
                    fn_name,
                    ex_id,
                    getattr(outcome, "instance", None),
                    outcome.result.stdout,
                    outcome.result.stderr,
                )
            except Exception:
                log.exception("storing log lines of %s failed", ex_id)

    def _function(self, name: str) -> Function:
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
    async def _invoke_on(self, handle: Handle, inv: Invocation) -> tuple[InvocationResult, float]:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(inv.timeout_s + TIMEOUT_GRACE_S):
                result = await handle.worker.invoke(inv)
        except TimeoutError:
            result = InvocationResult(
                status=504,
                timed_out=True,
                error=f"the function did not answer within its timeout of {inv.timeout_s:g} s",
            )
        run_ms = result.run_ms if result.run_ms is not None else (time.monotonic() - t0) * 1000
        return result, run_ms

    async def _run(self, fn: Function, inv: Invocation) -> Outcome:
        handle = await self.runner.acquire(fn, timeout_s=max(fn.timeout_s, 1.0))
        broken = True
        try:
            result, run_ms = await self._invoke_on(handle, inv)
            broken = result.timed_out or not getattr(handle.worker, "alive", True)
        finally:
            await _release(handle, broken)
        status = final_status(result)
        self._observe(fn.name, status, handle.cold, handle.init_ms + handle.wait_ms + run_ms)
        return Outcome(
            inv.execution_id, status, result, handle.cold, handle.init_ms, handle.wait_ms, run_ms, fn.runtime
        )

    def _observe(self, name: str, status: str, cold: bool, duration_ms: float) -> None:
        self.metrics.invocations.labels(name, status).inc()
        self.metrics.duration.labels(name).observe(duration_ms / 1000)
        (self.metrics.cold_starts if cold else self.metrics.warm_starts).labels(name).inc()
        if status != "succeeded":
            self.metrics.errors.labels("function_" + status).inc()

    def _invocation(self, fn: Function, inv: Invocation, ex_id: str) -> Invocation:
        return Invocation(
            body=inv.body,
            headers=forwardable_headers(inv.headers),
            path=inv.path,
            method=inv.method,
            query=inv.query,
            timeout_s=fn.timeout_s,
            execution_id=ex_id,
        )

    async def invoke(self, name: str, inv: Invocation) -> Outcome:
        """Synchronous invocation. Raises :class:`InvocationTimeoutError` (504) after recording a time-out."""
        fn = self._function(name)
        inv = self._invocation(fn, inv, inv.execution_id or new_execution_id())
        self._create(fn, inv, "sync", status="running")
        try:
            outcome = await self._run(fn, inv)
        except CapacityError:
            self.metrics.invocations.labels(name, "rejected").inc()
            self.metrics.errors.labels(CapacityError.code).inc()
            self._finish(
                inv.execution_id, name, None, status="failed", error="rejected: pool saturated (429)"
            )
            raise
        except FaasdError as exc:
            self.metrics.errors.labels(exc.code).inc()
            self._finish(inv.execution_id, name, None, status="failed", error=exc.message)
            raise
        except BaseException as exc:
            self._finish(inv.execution_id, name, None, status="failed", error=f"internal error: {exc!r}")
            raise
        self._finish(inv.execution_id, name, outcome)
        if outcome.status == "timeout":
            raise InvocationTimeoutError(
                f"function {name!r} did not finish within its timeout of {fn.timeout_s:g} s; the worker was "
                "stopped. Raise limits.timeout_s or make the function faster",
                execution_id=inv.execution_id,
                timeout_s=fn.timeout_s,
            )
        return outcome

    # -- streaming ----------------------------------------------------------------------------
    async def open_stream(self, name: str, inv: Invocation) -> StreamSession:
        """Reserve a worker (so 404/429 surface before the stream starts) and return the session."""
        fn = self._function(name)
        inv = self._invocation(fn, inv, inv.execution_id or new_execution_id())
        self._create(fn, inv, "stream", status="running")
        try:
            handle = await self.runner.acquire(fn, timeout_s=max(fn.timeout_s, 1.0))
        except FaasdError as exc:
            self.metrics.errors.labels(exc.code).inc()
            self._finish(inv.execution_id, name, None, status="failed", error=exc.message)
            raise
        return StreamSession(self, fn, inv, handle)

    # -- async --------------------------------------------------------------------------------
    def submit(self, name: str, inv: Invocation, callback_url: str | None = None) -> Execution:
        """Persist an async invocation (status ``queued``) and wake the loop. Durable before returning."""
        fn = self.functions.get(name)
        if callback_url is not None and not callback_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"callback URL {callback_url!r} must be an http:// or https:// URL")
        inv = self._invocation(fn, inv, inv.execution_id or new_execution_id())
        ex = self._create(fn, inv, "async", status="queued", callback_url=callback_url)
        assert ex is not None
        self._wakeup.set()
        return ex

    def reconcile(self) -> ReconcileReport:
        """Fix rows left by a daemon that died: async ``running`` → ``queued`` (or failed after
        :data:`MAX_ASYNC_ATTEMPTS`); sync/stream ``running`` → failed (their caller is gone)."""
        report = ReconcileReport()
        with self.db.session() as s:
            for ex in s.scalars(select(Execution).where(Execution.status == "running")):
                ex_id = ex.id
                if ex.kind == "async" and ex.attempts < MAX_ASYNC_ATTEMPTS:
                    ex.status = "queued"
                    ex.started_at = None
                    ex.not_before = None
                    report.requeued.append(ex_id)
                else:
                    ex.status = "failed"
                    ex.finished_at = utcnow()
                    ex.error = (
                        f"the daemon stopped during all {ex.attempts} attempt(s) of this async invocation; "
                        "gave up"
                        if ex.kind == "async"
                        else "the daemon stopped while this invocation was running; the caller got no "
                        "answer, retry it"
                    )
                    report.failed.append(ex_id)
        if report.requeued or report.failed:
            log.info("reconciled executions: requeued=%s failed=%s", report.requeued, report.failed)
        return report

    def _claim(self, limit: int) -> builtins.list[Execution]:
        now = utcnow()
        claimed: builtins.list[Execution] = []
        with self.db.session() as s:
            ids = list(
                s.scalars(
                    select(Execution.id)
                    .where(Execution.status == "queued")
                    .where(or_(Execution.not_before.is_(None), Execution.not_before <= now))
                    .order_by(Execution.created_at)
                    .limit(limit)
                )
            )
            for ex_id in ids:
                res = s.execute(
                    update(Execution)
                    .where(Execution.id == ex_id, Execution.status == "queued")
                    .values(status="running", started_at=now, attempts=Execution.attempts + 1)
                )
                if getattr(res, "rowcount", 0) == 1:
                    ex = s.get(Execution, ex_id)
                    if ex is not None:
                        claimed.append(ex)
        return claimed

    def prune(self, older_than_s: float = EXECUTION_RETENTION_S) -> int:
        """Delete finished executions older than ``older_than_s``; returns how many."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.db.session() as s:
            res = s.execute(
                delete(Execution).where(
                    Execution.status.in_(("succeeded", "failed", "timeout")), Execution.finished_at < cutoff
                )
            )
            return int(getattr(res, "rowcount", 0) or 0)

    def queued_count(self) -> int:
        with self.db.session() as s:
            q = select(func.count()).select_from(Execution).where(Execution.status == "queued")
            return int(s.scalar(q) or 0)

    async def _run_async(self, ex: Execution) -> None:
        try:
            fn = self.functions.get(ex.function)
        except NotFoundError:
            self._finish(
                ex.id,
                ex.function,
                None,
                status="failed",
                error=f"function {ex.function!r} was deleted before this invocation ran",
                durable=True,
            )
            await self._callback(ex.id)
            return
        inv = Invocation(
            body=ex.request_body or b"",
            headers=dict(ex.request_headers),
            path=ex.request_path,
            method=ex.request_method,
            query=ex.request_query,
            timeout_s=fn.timeout_s,
            execution_id=ex.id,
        )
        try:
            outcome = await self._run(fn, inv)
        except CapacityError as exc:
            with self.db.session() as s:
                row = s.get(Execution, ex.id)
                if row is not None:
                    row.status = "queued"
                    row.attempts = max(0, row.attempts - 1)
                    row.started_at = None
                    row.not_before = utcnow() + timedelta(seconds=exc.retry_after_s)
            return
        except FaasdError as exc:
            self.metrics.errors.labels(exc.code).inc()
            self._finish(ex.id, ex.function, None, status="failed", error=exc.message, durable=True)
        except asyncio.CancelledError:
            raise  # shutdown: stays 'running', reconcile() re-queues it on the next start
        except Exception as exc:
            log.exception("async execution %s failed unexpectedly", ex.id)
            self._finish(
                ex.id, ex.function, None, status="failed", error=f"internal error: {exc!r}", durable=True
            )
        else:
            self._finish(ex.id, ex.function, outcome, durable=True)
        await self._callback(ex.id)

    async def _callback(self, ex_id: str) -> None:
        ex = self.get(ex_id)
        if not ex.callback_url:
            return
        headers = {
            "X-Execution-Id": ex.id,
            "X-Call-Id": ex.id,
            "X-Function-Name": ex.function,
            "X-Function-Status": str(ex.http_status if ex.http_status is not None else 500),
            "X-Execution-Status": ex.status,
            "Content-Type": (ex.result_headers or {}).get("content-type", "application/octet-stream"),
        }
        body = ex.result_body if ex.result_body is not None else (ex.error or "").encode()
        delay = 0.5
        import httpx  # only executions with a callback URL need an HTTP client

        async with httpx.AsyncClient(timeout=self.callback_timeout_s) as client:
            for attempt in range(3):
                try:
                    resp = await client.post(ex.callback_url, content=body, headers=headers)
                    if resp.status_code < 500:
                        return
                    log.warning("callback %s for %s answered %s", ex.callback_url, ex.id, resp.status_code)
                except httpx.HTTPError as exc:
                    log.warning(
                        "callback %s for %s failed (attempt %d): %s", ex.callback_url, ex.id, attempt + 1, exc
                    )
                await asyncio.sleep(delay)
                delay *= 2

    async def drain_once(self) -> int:
        """Claim and start as many queued executions as there is room for; returns how many started."""
        room = self.max_async_concurrency - len(self._tasks)
        if room <= 0:
            return 0
        batch = self._claim(room)
        for ex in batch:
            task = asyncio.get_running_loop().create_task(self._run_async(ex))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return len(batch)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wakeup.set()

    async def _loop(self) -> None:
        last_prune = 0.0
        while not self._stopping:
            try:
                await self.drain_once()
                self.metrics.queued.set(self.queued_count())
                if time.monotonic() - last_prune >= PRUNE_INTERVAL_S:
                    last_prune = time.monotonic()
                    if n := self.prune():
                        log.info("deleted %d finished execution(s) older than the retention period", n)
            except Exception:
                log.exception("async execution loop iteration failed")
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wakeup.wait()

    def start(self) -> None:
        if self._loop_task is None:
            self._stopping = False
            self.journal.reopen()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing is queued or running (tests, graceful shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks or self.queued_count():
                await self.drain_once()
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=0.5)
                else:
                    await asyncio.sleep(0.05)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the loop; running async executions get ``grace_s`` to finish, then are cancelled
        (they stay ``running`` and are re-queued by :meth:`reconcile` on the next start)."""
        self._stopping = True
        self._wakeup.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self.journal.close()


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
            await _release(handle, broken)
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
