"""Function log lines (stdout/stderr of invocations): stored for ``/system/logs``, followable live."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from faasd.state import Database, LogLine
from faasd.state.models import utcnow

MAX_LINE_CHARS = 16 * 1024
MAX_LINES_PER_INVOCATION = 1000


@dataclass(frozen=True)
class LogEntry:
    function: str
    execution_id: str | None
    instance: str | None
    stream: str
    text: str
    timestamp: datetime
    id: int | None = None  # row id (set once stored): lets a follower drop lines it already sent

    def to_dict(self) -> dict[str, object]:
        return {
            "function": self.function,
            "execution_id": self.execution_id,
            "instance": self.instance,
            "stream": self.stream,
            "text": self.text,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
        }


def _entry(row: LogLine) -> LogEntry:
    return LogEntry(row.function, row.execution_id, row.instance, row.stream, row.text, row.timestamp, row.id)


def split_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if len(lines) > MAX_LINES_PER_INVOCATION:
        dropped = len(lines) - MAX_LINES_PER_INVOCATION
        lines = [*lines[:MAX_LINES_PER_INVOCATION], f"... {dropped} more line(s) dropped"]
    return [ln[:MAX_LINE_CHARS] for ln in lines]


class LogSubscription:
    """Live log lines of one function, queued from the moment it is created (see :meth:`LogService.follow`).

    Create it *before* querying the history so that no line falls in between, then pass the history's
    ids to :meth:`skip` so that a line that is in both is delivered once. ``get(timeout)`` waits without
    closing anything on time-out; it is also an async iterator. ``close()`` (or ``aclose()``) unsubscribes.
    """

    def __init__(self, service: LogService, function: str, maxsize: int = 10000) -> None:
        self._service = service
        self.function = function
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._queue: asyncio.Queue[LogEntry] = asyncio.Queue(maxsize=maxsize)
        self._skip: set[int] = set()
        self.dropped = 0
        self.closed = False

    def skip(self, ids: set[int | None] | list[int | None]) -> None:
        self._skip.update(i for i in ids if i is not None)

    def _put(self, entry: LogEntry) -> None:
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1

    def push(self, entry: LogEntry) -> None:
        """Queue one line; safe from any thread (appends may run in worker threads)."""
        if self.closed:
            return
        if threading.get_ident() == self._thread:
            self._put(entry)
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._put, entry)

    async def get(self, timeout: float | None = None) -> LogEntry | None:
        """Next line not in the skipped history, or ``None`` after ``timeout`` seconds without one."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                entry = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                return None
            if entry.id is not None and entry.id in self._skip:
                self._skip.discard(entry.id)
                continue
            return entry

    def __aiter__(self) -> LogSubscription:
        return self

    async def __anext__(self) -> LogEntry:
        if self.closed:
            raise StopAsyncIteration
        entry = await self.get()
        assert entry is not None  # no timeout
        return entry

    def close(self) -> None:
        self.closed = True
        self._service._unsubscribe(self)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> LogSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogService:
    def __init__(self, db: Database, retention_per_function: int = 10000) -> None:
        self.db = db
        self.retention = retention_per_function
        self._subscribers: dict[str, set[LogSubscription]] = {}
        self._appends: dict[str, int] = {}
        self._lock = threading.Lock()

    def append(
        self, function: str, execution_id: str | None, instance: str | None, stdout: bytes, stderr: bytes
    ) -> list[LogEntry]:
        now = utcnow()
        entries = [
            LogEntry(function, execution_id, instance, stream, line, now)
            for stream, data in (("stdout", stdout), ("stderr", stderr))
            for line in split_lines(data)
        ]
        if not entries:
            return []
        with self.db.session() as s:
            rows = [
                LogLine(
                    function=e.function,
                    execution_id=e.execution_id,
                    instance=e.instance,
                    stream=e.stream,
                    text=e.text,
                    timestamp=e.timestamp,
                )
                for e in entries
            ]
            s.add_all(rows)
            s.flush()
            entries = [_entry(r) for r in rows]
        with self._lock:
            n = self._appends[function] = self._appends.get(function, 0) + 1
            subscribers = list(self._subscribers.get(function, ()))
        if n % 100 == 0:
            self.prune(function)
        for sub in subscribers:
            for e in entries:
                sub.push(e)
        return entries

    def query(self, function: str, tail: int | None = None, since: datetime | None = None) -> list[LogEntry]:
        with self.db.session() as s:
            q = select(LogLine).where(LogLine.function == function)
            if since is not None:
                q = q.where(LogLine.timestamp >= since)
            if tail is not None:
                rows = list(s.scalars(q.order_by(LogLine.id.desc()).limit(max(0, tail))))
                rows.reverse()
            else:
                rows = list(s.scalars(q.order_by(LogLine.id).limit(100000)))
            return [_entry(r) for r in rows]

    def for_execution(self, execution_id: str) -> list[LogEntry]:
        with self.db.session() as s:
            rows = s.scalars(select(LogLine).where(LogLine.execution_id == execution_id).order_by(LogLine.id))
            return [_entry(r) for r in rows]

    def follow(self, function: str) -> LogSubscription:
        """Subscribe to new lines of ``function`` now: call it in the event loop, before querying history."""
        sub = LogSubscription(self, function)
        with self._lock:
            self._subscribers.setdefault(function, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: LogSubscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.function)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[sub.function]

    def prune(self, function: str) -> None:
        with self.db.session() as s:
            ids = list(
                s.scalars(
                    select(LogLine.id)
                    .where(LogLine.function == function)
                    .order_by(LogLine.id.desc())
                    .offset(self.retention)
                    .limit(1)
                )
            )
            if ids:
                s.execute(delete(LogLine).where(LogLine.function == function, LogLine.id <= ids[0]))

    def delete_function(self, function: str) -> None:
        with self.db.session() as s:
            s.execute(delete(LogLine).where(LogLine.function == function))
