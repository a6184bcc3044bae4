"""The write-behind journal of sync/stream execution records (:class:`ExecutionJournal`)."""

from __future__ import annotations

import asyncio
import builtins
import logging
import operator
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Dialect,
    Float,
    Insert,
    LargeBinary,
    Table,
    bindparam,
    func,
    insert,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeEngine

from faasd.state import Database, Execution, Function
from faasd.state.models import UTCDateTime

log = logging.getLogger(__name__)

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


class _InsertPlan:
    """An INSERT compiled once for a set of columns, with each bind parameter's processor."""

    def __init__(
        self,
        sql: str,
        procs: Sequence[tuple[str, Callable[[Any], Any] | None]],
        native: Sequence[frozenset[type]],
    ) -> None:
        """``native``: per entry of ``procs``, the types passed to the driver as they are
        (:func:`_native_types`)."""
        self.sql = sql
        self.procs = procs
        names = [name for name, _ in procs]
        self._values: Callable[[dict[str, Any]], Sequence[Any]] = (
            operator.itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
        )
        self._convert = [(i, p, native[i]) for i, (_, p) in enumerate(procs) if p is not None]

    @classmethod
    def build(cls, stmt: Insert, dialect: Dialect, keys: tuple[str, ...]) -> _InsertPlan | None:
        compiled = stmt.compile(dialect=dialect, column_keys=builtins.list(keys))
        order = compiled.positiontup
        if not compiled.positional or order is None or not set(order) <= set(keys):
            return None  # named parameters, or columns the rows lack (Core fills in defaults)
        # each column's processor as the dialect applies it (what Core's execution runs per row), or an
        # equivalent that gives the same values for less (see _fast_processor)
        procs = []
        native = []
        shared: dict[str, Callable[[Any], Any] | None] = {}  # one stand-in per column type (its memo too)
        for name in order:
            col_type = compiled.binds[name].type
            kind = repr(col_type)
            if kind not in shared:
                proc = col_type.dialect_impl(dialect).bind_processor(dialect)
                shared[kind] = _fast_processor(col_type, dialect, proc)
            procs.append((name, shared[kind]))
            native.append(_native_types(col_type, dialect))
        return cls(compiled.string, procs, native)

    def params(self, rows: Sequence[dict[str, Any]]) -> builtins.list[tuple[Any, ...]]:
        """Each row's values in the statement's order (KeyError for a missing column), converted a column at
        a time: a column whose values are all of types the driver binds as its processor would (bytes, bool,
        float, None on SQLite: :func:`_native_types`) goes as it is, any other through the processor. Per
        value, a processor call was ~0.5 us, 14 columns of every gateway row had one."""
        values = [self._values(row) for row in rows]
        if not values or not self._convert:
            return [tuple(v) for v in values]
        columns: builtins.list[Sequence[Any]] = builtins.list(zip(*values, strict=True))
        done: builtins.list[tuple[Sequence[Any], Sequence[Any], Callable[[Any], Any]]] = []
        for i, proc, native in self._convert:
            column = columns[i]
            if native and set(map(type, column)) <= native:
                continue
            for before, converted, by in done:  # a row's created_at is its started_at: formatted once
                if by is proc and all(map(operator.is_, column, before)):
                    columns[i] = converted
                    break
            else:
                columns[i] = builtins.list(map(proc, column))
                done.append((column, columns[i], proc))
        return builtins.list(zip(*columns, strict=True))  # SQLAlchemy's raw executemany takes tuples only


def _fast_processor(
    col_type: TypeEngine[Any], dialect: Dialect, proc: Callable[[Any], Any] | None
) -> Callable[[Any], Any] | None:
    """A cheaper stand-in for ``proc`` where one gives the same value on SQLite (``executemany`` of a batch
    runs each column's processor per row: under gateway load the JSON and datetime columns' were ~30 %
    of the daemon's CPU, py-spy). Anything else keeps its own processor."""
    if proc is None or dialect.name != "sqlite":
        return proc
    if isinstance(col_type, UTCDateTime):
        impl = col_type.impl_instance.dialect_impl(dialect)
        if getattr(impl, "_storage_format", None) == _SQLITE_DATETIME_FORMAT:
            return _sqlite_datetime(proc)
    if isinstance(col_type, JSON):
        return _memo_json(proc)
    if isinstance(col_type, Boolean) and not dialect.supports_native_boolean:
        return _sqlite_boolean(proc)
    return proc


def _native_types(col_type: TypeEngine[Any], dialect: Dialect) -> frozenset[type]:
    """The Python types whose values the SQLite driver stores exactly as the column's processor would have
    them stored: ``bytes`` in a binary column (the processor wraps them in a ``memoryview``), ``bool`` in a
    boolean one (it turns them into 1 and 0, which is how the driver binds a ``bool``), ``float`` in a float
    one (it calls ``float``); ``None`` in each. Empty elsewhere and for other columns."""
    if dialect.name != "sqlite":
        return frozenset()
    if isinstance(col_type, LargeBinary):
        return frozenset({bytes, type(None)})
    if isinstance(col_type, Boolean) and not dialect.supports_native_boolean:
        return frozenset({bool, type(None)})
    if isinstance(col_type, Float) and not col_type.asdecimal:
        return frozenset({float, type(None)})
    return frozenset()


_SQLITE_DATETIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)
"""SQLAlchemy's default storage format of SQLite ``DATETIME`` (what :func:`_sqlite_datetime` writes)."""


def _sqlite_datetime(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``UTCDateTime`` on SQLite: the wall time as ``YYYY-MM-DD HH:MM:SS.ffffff`` (the tzinfo dropped, as
    the dialect does), with C ``isoformat`` instead of a ``%`` format of seven looked-up fields."""

    last: list[Any] = [None, None]  # the last datetime and its text (a row's created_at is its started_at)

    def process(value: Any) -> Any:
        if value is None:
            return None
        if value is last[0]:
            return last[1]
        if type(value) is datetime and value.year >= 1000:
            text = value.isoformat(" ", "microseconds")[:26]
            last[0], last[1] = value, text
            return text
        return proc(value)

    return process


def _sqlite_boolean(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A boolean column on SQLite: ``True``/``False`` as the 1/0 the dialect's processor makes of them
    (``None`` stays ``None``), anything else through it (which refuses what is not a boolean)."""

    def process(value: Any) -> Any:
        if value is True:
            return 1
        if value is False:
            return 0
        if value is None:
            return None
        return proc(value)

    return process


def _memo_json(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON column whose values repeat (headers): each distinct flat ``str -> str`` dict is serialised
    once (keyed by its items in order, so the text is exactly what ``proc`` gives); other values go
    through ``proc``. At most 1024 texts are kept."""
    memo: dict[tuple[tuple[str, str], ...], Any] = {}

    def process(value: Any) -> Any:
        if type(value) is not dict:
            return proc(value)
        try:
            key = tuple(value.items())
            text = memo.get(key)
        except TypeError:  # an unhashable value: not a flat header dict
            return proc(value)
        if text is None:
            if not all(type(k) is str and type(v) is str for k, v in key):
                return proc(value)
            text = proc(value)
            if len(memo) >= 1024:
                memo.clear()
            memo[key] = text
        return text

    return process


_UNPLANNED: Any = object()


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
        self._plans: dict[tuple[str, ...], _InsertPlan | None] = {}
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

    def done(self, row: dict[str, Any], function: str) -> None:
        """A finished execution recorded in one go (created and finished at once: one INSERT, counted in
        ``invocation_count``). ``row`` must carry every column :data:`_FINISH_DEFAULTS` names."""
        self.done_many([row], function)

    def done_many(self, rows: builtins.list[dict[str, Any]], function: str) -> None:
        """:meth:`done` of each row, appended at once."""
        if not rows:
            return
        for row in rows:
            row["_function"] = function
        self._record(*[("done", str(row["id"]), row) for row in rows])

    def _record(self, *ops: tuple[str, str, dict[str, Any]]) -> None:
        size = 0
        for op in ops:
            values = op[2]
            size += len(values.get("request_body") or b"") + len(values.get("result_body") or b"")
        with self._lock:
            self._ops.extend(ops)
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
            if kind == "done":
                done = dict(values)
                fn = done.pop("_function")
                counts[fn] = counts.get(fn, 0) + 1
                inserts[ex_id] = done
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
                self._insert_rows(conn, builtins.list(inserts.values()))
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

    def _insert_rows(self, conn: Connection, rows: builtins.list[dict[str, Any]]) -> None:
        """One ``executemany`` INSERT of ``rows``. On SQLite the statement is compiled once per set of
        columns and each row goes through the columns' own bind processors straight to the driver: Core's
        per-execution parameter processing was ~40 % of the daemon's CPU under gateway load (py-spy).
        Elsewhere (PostgreSQL batches with insertmanyvalues) and for rows that lack a column Core would
        fill with its default, Core's ``executemany``."""
        keys = tuple(rows[0])
        plan = self._plans.get(keys, _UNPLANNED) if self.db.is_sqlite else None
        if plan is _UNPLANNED:
            plan = self._plans[keys] = _InsertPlan.build(self._insert, conn.dialect, keys)
        if plan is None:
            conn.execute(self._insert, rows)
            return
        try:
            params = plan.params(rows)
        except KeyError:  # a row without a column the first one has: Core reports it
            conn.execute(self._insert, rows)
            return
        conn.exec_driver_sql(plan.sql, params)

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
