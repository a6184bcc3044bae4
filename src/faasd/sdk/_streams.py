"""Incremental parsers for the two streaming formats of the API: Server-Sent Events and NDJSON.

Both are fed decoded lines (``httpx.Response.iter_lines``/``aiter_lines``), so the sync and async
clients share them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from faasd.sdk.errors import ProtocolError


@dataclass(frozen=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise ProtocolError(
                f"SSE event {self.event!r} carries invalid JSON: {self.data[:200]!r}"
            ) from exc


@dataclass
class SSEDecoder:
    """The W3C event-stream algorithm: ``decode(line)`` returns an event when ``line`` ends one."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _retry: int | None = None
    _dirty: bool = False

    def decode(self, line: str) -> ServerSentEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._dirty:
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._event, self._data, self._retry, self._dirty = "", [], None, False
            return event
        if line.startswith(":"):
            return None  # comment / keep-alive ping
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        else:
            return None  # unknown field: ignored, per spec
        self._dirty = True
        return None

    def flush(self) -> ServerSentEvent | None:
        """An event left without its terminating blank line when the stream ended."""
        return self.decode("")


def decode_ndjson_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"log stream sent a line that is not JSON: {line[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"log stream sent a JSON value that is not an object: {line[:200]!r}")
    return value
