"""Function log lines (stdout/stderr of invocations): stored for ``/system/logs``, followable live."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
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
    return LogEntry(row.function, row.execution_id, row.instance, row.stream, row.text, row.timestamp)


def split_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if len(lines) > MAX_LINES_PER_INVOCATION:
        dropped = len(lines) - MAX_LINES_PER_INVOCATION
        lines = [*lines[:MAX_LINES_PER_INVOCATION], f"... {dropped} more line(s) dropped"]
    return [ln[:MAX_LINE_CHARS] for ln in lines]


class LogService:
    def __init__(self, db: Database, retention_per_function: int = 10000) -> None:
        self.db = db
        self.retention = retention_per_function
        self._subscribers: dict[str, set[asyncio.Queue[LogEntry]]] = {}
        self._appends: dict[str, int] = {}

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
            s.add_all(
                LogLine(
                    function=e.function,
                    execution_id=e.execution_id,
                    instance=e.instance,
                    stream=e.stream,
                    text=e.text,
                    timestamp=e.timestamp,
                )
                for e in entries
            )
        n = self._appends[function] = self._appends.get(function, 0) + 1
        if n % 100 == 0:
            self.prune(function)
        for q in list(self._subscribers.get(function, ())):
            for e in entries:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(e)
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

    async def follow(self, function: str) -> AsyncGenerator[LogEntry, None]:
        q: asyncio.Queue[LogEntry] = asyncio.Queue(maxsize=10000)
        self._subscribers.setdefault(function, set()).add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.get(function, set()).discard(q)

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
