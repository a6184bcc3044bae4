"""What a handler returned, as an HTTP answer; what it prints, as frames; its traceback without the agent.
Standard library only (Python 3.8+)."""

from __future__ import annotations

import base64
import io
import json
import os
import threading

LINE_FLUSH_BYTES = 8 * 1024
AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
"""Frames from files here are the agent's, not the user's (:func:`user_traceback` leaves them out)."""


class InvalidResponse(Exception):
    pass


def body_bytes(value: object) -> tuple[bytes, str | None]:
    if value is None:
        return b"", None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode("utf-8"), "text/plain; charset=utf-8"
    try:
        return json.dumps(value).encode("utf-8"), "application/json"
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(
            f"handler returned a {type(value).__name__}, which is not bytes, str or JSON-serialisable: {exc}"
        ) from None


def normalize_result(value: object) -> tuple[int, list[list[str]], bytes]:
    """Map what ``handle()`` returned to (status, header pairs, body)."""
    status = 200
    raw_headers: object = None
    if isinstance(value, dict) and "statusCode" in value:
        try:
            status = int(value["statusCode"])
        except (TypeError, ValueError):
            raise InvalidResponse(f"statusCode must be an integer, got {value['statusCode']!r}") from None
        if not 100 <= status <= 599:
            raise InvalidResponse(f"statusCode {status} is not an HTTP status")
        raw_headers = value.get("headers")
        body_value = value.get("body")
        if value.get("isBase64Encoded") and isinstance(body_value, (str, bytes)):
            body_value = base64.b64decode(body_value)
        body, default_type = body_bytes(body_value)
    else:
        body, default_type = body_bytes(value)
    headers: list[list[str]] = []
    if raw_headers is not None:
        if not isinstance(raw_headers, dict):
            raise InvalidResponse("'headers' must be a dict of name -> value (or list of values)")
        for name, val in raw_headers.items():
            for item in val if isinstance(val, (list, tuple)) else [val]:
                headers.append([str(name), str(item)])
    if default_type and not any(h[0].lower() == "content-type" for h in headers):
        headers.append(["content-type", default_type])
    return status, headers, body


class FrameStream(io.TextIOBase):
    """A text stream that forwards what the handler prints as ``stdout``/``stderr`` frames."""

    def __init__(self, send, kind: str, lock: threading.Lock) -> None:
        super().__init__()
        self._send = send
        self._kind = kind
        self._lock = lock
        self._buf = bytearray()
        self._buffer: BinaryView | None = None

    @property
    def buffer(self) -> BinaryView:
        """``sys.stdout.buffer``: made when first used (most handlers never write bytes)."""
        if self._buffer is None:
            self._buffer = BinaryView(self)
        return self._buffer

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.write_bytes(s.encode("utf-8", "replace"))
        return len(s)

    def write_bytes(self, b: bytes) -> None:
        with self._lock:
            self._buf += b
            if b"\n" in b or len(self._buf) >= LINE_FLUSH_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._send(self._kind, data)


class BinaryView:
    """``sys.stdout.buffer`` for code that writes bytes."""

    def __init__(self, stream: FrameStream) -> None:
        self._stream = stream

    def write(self, b: bytes) -> int:
        self._stream.write_bytes(bytes(b))
        return len(b)

    def flush(self) -> None:
        self._stream.flush()


def user_traceback(exc: BaseException | None, _depth: int = 0) -> str:
    """The traceback of ``exc`` without the agent's and importlib's own frames: what the user wrote."""
    import traceback  # on the first error, not at the agent's start (~2 ms of every sandbox start)

    if exc is None:
        return ""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.dirname(os.path.abspath(f.filename)) != AGENT_DIR
        and not f.filename.startswith("<frozen ")
        and not f.filename.endswith(os.sep + os.path.join("importlib", "__init__.py"))
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines)
    if _depth < 5:
        if exc.__cause__ is not None:
            text = (
                user_traceback(exc.__cause__, _depth + 1) + "\nThe above exception was the direct cause "
                "of the following exception:\n\n" + text
            )
        elif exc.__context__ is not None and not exc.__suppress_context__:
            text = (
                user_traceback(exc.__context__, _depth + 1) + "\nDuring handling of the above exception, "
                "another exception occurred:\n\n" + text
            )
    return text


def exc_message(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
