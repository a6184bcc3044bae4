"""The access log, batched: one JSON line per request, written off the request's path.

A request only appends a tuple to a buffer; the lines are written at most :data:`ACCESS_LOG_DELAY_S`
later (or once :data:`ACCESS_LOG_MAX_PENDING` are waiting), in one write per handler. When every
handler of the ``faasd.access`` logger is a stream handler with the daemon's :class:`JsonFormatter`
(``setup_logging``), the lines are formatted here exactly as that formatter would (``ts``, ``level``,
``logger``, ``msg`` and the request's fields) and written with one ``write`` per batch; under any other
logging configuration (tests' ``caplog``, an embedding application) each entry goes through
``logging`` as a normal record. The buffer is written at shutdown (:meth:`AccessLog.flush`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from datetime import UTC, datetime

from faasd.api.logging import JsonFormatter

ACCESS_LOG_DELAY_S = 0.1
ACCESS_LOG_MAX_PENDING = 1024

_Entry = tuple[float, str, str, str, int, float, str | None]
"""(time.time(), method, path, route, status, duration_ms, key_id)"""


def _fields(e: _Entry) -> dict[str, object]:
    return {
        "http_method": e[1],
        "http_path": e[2],
        "http_route": e[3],
        "http_status": e[4],
        "duration_ms": e[5],
        "key_id": e[6],
    }


_quote = json.encoder.encode_basestring
"""The JSON string of a ``str`` as ``json.dumps(..., ensure_ascii=False)`` writes it (C)."""


def json_line(logger: str, e: _Entry) -> str:
    """The line :class:`JsonFormatter` writes for ``e`` (the same text as ``json.dumps`` of its fields),
    formatted from a template: ``json.dumps`` of the ten-key dict was ~10 % of the daemon's CPU under
    gateway load (py-spy). Entries of unexpected types go through ``json.dumps``."""
    at, method, path, route, status, ms, key = e
    ts = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    if (
        type(method) is str
        and type(path) is str
        and type(route) is str
        and type(status) is int
        and type(ms) is float
        and math.isfinite(ms)
        and (key is None or type(key) is str)
    ):
        return (
            f'{{"ts": "{ts}", "level": "info", "logger": {_quote(logger)}, '
            f'"msg": {_quote(f"{method} {path} {status}")}, "http_method": {_quote(method)}, '
            f'"http_path": {_quote(path)}, "http_route": {_quote(route)}, "http_status": {status!r}, '
            f'"duration_ms": {ms!r}, "key_id": {"null" if key is None else _quote(key)}}}'
        )
    out: dict[str, object] = {"ts": ts, "level": "info", "logger": logger, "msg": f"{method} {path} {status}"}
    out.update(_fields(e))
    return json.dumps(out, ensure_ascii=False)


class AccessLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None

    def record(
        self,
        at: float,
        method: str,
        path: str,
        route: str,
        status: int,
        duration_ms: float,
        key_id: str | None,
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        with self._lock:
            self._entries.append((at, method, path, route, status, round(duration_ms, 3), key_id))
            n = len(self._entries)
        if n >= ACCESS_LOG_MAX_PENDING:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(ACCESS_LOG_DELAY_S, self.flush)

    def _handlers(self) -> list[logging.Handler]:
        out: list[logging.Handler] = []
        lg: logging.Logger | None = self.logger
        while lg is not None:
            out += [h for h in lg.handlers if h.level <= logging.INFO]
            if not lg.propagate:
                break
            lg = lg.parent
        return out

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            entries, self._entries = self._entries, []
        if not entries:
            return
        handlers = self._handlers()
        direct = bool(handlers) and all(
            type(h) is logging.StreamHandler and isinstance(h.formatter, JsonFormatter) and not h.filters
            for h in handlers
        ) and not self.logger.filters
        if not direct:
            for e in entries:
                self.logger.info("%s %s %d", e[1], e[2], e[4], extra=_fields(e))
            return
        name = self.logger.name
        text = "\n".join([json_line(name, e) for e in entries]) + "\n"
        for h in handlers:
            assert isinstance(h, logging.StreamHandler)
            h.acquire()
            try:
                h.stream.write(text)
                h.flush()
            except Exception:
                h.handleError(logging.makeLogRecord({"msg": "access log write failed"}))
            finally:
                h.release()
