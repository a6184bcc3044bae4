"""What a Python function running under faasd can import: ``import faasd_runtime``.

Standard library only: this file runs inside the sandbox under the image's own ``python3``.

* :class:`Event` and :class:`Context` are what ``handle(event, context)`` receives.
* :func:`register_after_restore` registers a callable run after the sandbox was restored from a
  CRIU snapshot. One snapshot may be restored into many copies, which then share every piece of
  in-memory state: the agent reseeds :mod:`random` itself, but anything else that must differ per
  copy (own PRNGs, cached ids, open connections to re-establish) belongs in such a hook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

TYPE_CHECKING = False  # `typing` is not imported at run time: ~2 ms of every sandbox start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Context", "Event", "register_after_restore", "run_after_restore_hooks"]

_after_restore_hooks: list[Callable[[], Any]] = []


def register_after_restore(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn()`` every time this sandbox is restored from a snapshot. Usable as a decorator."""
    if not callable(fn):
        raise TypeError("register_after_restore() needs a callable")
    _after_restore_hooks.append(fn)
    return fn


def run_after_restore_hooks() -> list[str]:
    """Run every hook in registration order; returns the tracebacks of the hooks that raised."""
    import traceback

    errors: list[str] = []
    for fn in list(_after_restore_hooks):
        try:
            fn()
        except Exception:
            errors.append(traceback.format_exc())
    return errors


def hook_count() -> int:
    return len(_after_restore_hooks)


class Event:
    """One HTTP-like invocation. ``event.body`` is bytes; headers have lower-case names."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, body: bytes, headers: dict[str, str], method: str, path: str, query: str) -> None:
        self.body = body
        self.headers = headers
        self.method = method
        self.path = path
        self.query = query

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def query_params(self) -> dict[str, str]:
        import urllib.parse  # here, not at the agent's start: ~2 ms of every sandbox start

        return dict(urllib.parse.parse_qsl(self.query, keep_blank_values=True))

    # dict-style access, for handlers written against Lambda-style dict events
    def __getitem__(self, key: str) -> Any:
        if key in self.__slots__:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__slots__ else default

    def __repr__(self) -> str:
        return f"Event(method={self.method!r}, path={self.path!r}, body=<{len(self.body)} bytes>)"


class Context:
    """Facts about the current invocation."""

    __slots__ = ("_deadline", "function_name", "request_id", "timeout_s")

    def __init__(self, request_id: str, function_name: str, timeout_s: float | None) -> None:
        self.request_id = request_id
        self.function_name = function_name
        self.timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s if timeout_s else None

    def remaining_time_s(self) -> float | None:
        """Seconds left before the invocation is cut off, or None when it has no timeout."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def get_remaining_time_in_millis(self) -> int:  # Lambda spelling
        left = self.remaining_time_s()
        return int(left * 1000) if left is not None else 2**31 - 1

    def __repr__(self) -> str:
        return f"Context(request_id={self.request_id!r}, function_name={self.function_name!r})"
