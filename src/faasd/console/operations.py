"""Long console operations (image import, branch of N) that report progress to the browser over SSE."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from faasd.errors import FaasdError, NotFoundError

KEEP_FINISHED = 100


@dataclass
class Operation:
    id: str
    kind: str
    title: str
    status: str = "running"
    """running | done | failed"""
    done: float = 0.0
    total: float = 1.0
    message: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    version: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def progress(self, done: float, total: float, message: str = "") -> None:
        self.done, self.total, self.message = done, max(total, 1e-9), message or self.message
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()

    async def wait_change(self, seen: int, timeout: float) -> None:
        if self.version != seen:
            return
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "fraction": round(min(1.0, self.done / self.total), 4) if self.total else 0.0,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "started": self.started,
        }


Work = Callable[[Operation], Awaitable[Any]]


class Operations:
    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, kind: str, title: str, work: Work) -> Operation:
        op = Operation("op-" + secrets.token_hex(6), kind, title)
        self._ops[op.id] = op
        finished = [o for o in self._ops.values() if o.status != "running"]
        for old in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            self._ops.pop(old.id, None)

        async def run() -> None:
            try:
                op.result = await work(op)
                op.status, op.done = "done", op.total
            except FaasdError as exc:
                op.status, op.error = "failed", exc.to_dict()
            except Exception as exc:
                op.status = "failed"
                op.error = {"error": "internal", "message": f"{type(exc).__name__}: {exc}"}
            op._bump()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op

    def get(self, op_id: str) -> Operation:
        op = self._ops.get(op_id)
        if op is None:
            raise NotFoundError(f"operation {op_id!r} does not exist (finished long ago?)", id=op_id)
        return op

    def list(self) -> list[Operation]:
        return list(self._ops.values())
