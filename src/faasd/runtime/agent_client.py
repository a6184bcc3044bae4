"""Host side of the agent protocol (see ``faasd/agents/PROTOCOL.md``).

One request per connection: connect to ``<bundle>/io/agent.sock``, send one frame (plus body), read
frames until the final ``result``/``error``/``pong``/``ack``, close. Nothing stays connected between
requests, so a CRIU checkpoint of the sandbox never sees an established connection to the host.

A frame is a 4-byte big-endian length, that many bytes of a UTF-8 JSON object (the header, with a
string ``type``), then ``header["body_len"]`` bytes of body (none when absent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from faasd.errors import InvalidInputError, ResourceLimitError, RuntimeFailure
from faasd.runtime.agent_ready import ReadySignal

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
TIMEOUT_GRACE_S = 2.0
"""How long after the agent's own deadline the host waits before it declares the agent hung."""
READY_POLL_MAX_S = 0.005
"""Longest pause between two readiness checks of a starting agent (:meth:`AgentClient.wait_ready`): a check
is a stat of the socket path and a look at the exit status, so polling often costs little, while every
pause is time a cold start may wait for nothing after the agent is ready (up to 25 ms before)."""

_LEN = struct.Struct(">I")
_UNIX_PATH_MAX = 107


class ProtocolError(RuntimeFailure):
    """The agent sent something that is not a valid frame."""


# ------------------------------------------------------------------------------------- framing
def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One frame: length-prefixed JSON header, then the body (``body_len`` is set from ``body``)."""
    if body:
        header = {**header, "body_len": len(body)}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise InvalidInputError(f"frame header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES} bytes")
    return _LEN.pack(len(raw)) + raw + body


async def read_frame(
    reader: asyncio.StreamReader, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> tuple[dict[str, Any], bytes]:
    """Read one frame. Raises ``EOFError`` on a clean close before the frame started,
    :class:`ProtocolError` on garbage and :class:`ResourceLimitError` when the body is too large."""
    try:
        prefix = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed") from None
        raise ProtocolError("the agent closed the connection in the middle of a frame") from None
    (size,) = _LEN.unpack(prefix)
    if size == 0 or size > MAX_HEADER_BYTES:
        raise ProtocolError(f"the agent sent a frame header of {size} bytes (limit {MAX_HEADER_BYTES})")
    try:
        raw = await reader.readexactly(size)
        header = json.loads(raw)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the agent closed the connection in the middle of a frame") from None
    except ValueError as exc:
        raise ProtocolError(f"the agent sent a frame header that is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("the agent sent a frame header without a string 'type'")
    body_len = header.get("body_len", 0)
    if not isinstance(body_len, int) or body_len < 0:
        raise ProtocolError(f"the agent sent an invalid body_len {body_len!r}")
    if body_len > max_body_bytes:
        raise ResourceLimitError(
            f"the function's response of {body_len} bytes exceeds the limit of {max_body_bytes} bytes; "
            "return less data (or stream it)",
            limit="response_bytes",
            body_len=body_len,
            max_body_bytes=max_body_bytes,
        )
    try:
        body = await reader.readexactly(body_len) if body_len else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError("the agent closed the connection in the middle of a frame body") from None
    return header, body


# ------------------------------------------------------------------------------------ requests
@dataclass
class InvokeRequest:
    """One invocation, HTTP-shaped. ``env`` is added to the environment for this request only."""

    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/"
    query: str = ""
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = 30.0
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def header_frame(self, fork: bool | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "invoke",
            "id": self.request_id,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "env": dict(self.env),
            "timeout_s": self.timeout_s,
        }
        if fork is not None:
            frame["fork"] = fork
        return frame


@dataclass
class Timings:
    init_ms: float | None = None
    """Time the worker took to become ready (same for every request of one worker)."""
    run_ms: float | None = None
    """Time the function ran, as measured next to it (inside the sandbox)."""
    total_ms: float | None = None
    """Round trip measured by the host, connection set-up included."""


@dataclass
class FunctionError:
    """The function failed: it raised, crashed, or returned something unusable."""

    kind: str
    """``exception`` | ``crash`` | ``invalid_response`` | ``exit_code``"""
    message: str
    traceback: str = ""
    exception: str | None = None


@dataclass
class InvokeResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None
    timings: Timings = field(default_factory=Timings)
    error: FunctionError | None = None
    output_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default


@dataclass
class StreamChunk:
    """Output the function wrote while it was running."""

    stream: Literal["stdout", "stderr", "body"]
    """``body`` only for http-mode workers (the response body as it arrives)."""
    data: bytes


InvokeEvent = StreamChunk | InvokeResult


def error_result(err: FunctionError, *, status: int = 500, **kw: Any) -> InvokeResult:
    body = json.dumps({"error": "function_" + err.kind, "message": err.message, "traceback": err.traceback})
    return InvokeResult(
        status=status, headers=[("content-type", "application/json")], body=body.encode(), error=err, **kw
    )


class _Output:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False

    def add(self, stream: str, data: bytes) -> None:
        buf = self.parts[stream]
        room = self.limit - len(buf)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        buf += data


# -------------------------------------------------------------------------------------- client
class AgentClient:
    """Talks to one agent over its Unix socket. Safe to share; every call uses its own connection."""

    def __init__(
        self,
        socket_path: Path,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.max_body_bytes = max_body_bytes
        self.max_output_bytes = max_output_bytes
        self.connect_timeout_s = connect_timeout_s

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        path = str(self.socket_path)
        if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
            return await asyncio.wait_for(asyncio.open_unix_connection(path), self.connect_timeout_s)
        # sun_path is limited to 108 bytes: go through an O_PATH descriptor of the directory.
        dfd = os.open(self.socket_path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            short = f"/proc/self/fd/{dfd}/{self.socket_path.name}"
            return await asyncio.wait_for(asyncio.open_unix_connection(short), self.connect_timeout_s)
        finally:
            os.close(dfd)

    async def _exchange(self, header: dict[str, Any], body: bytes, timeout_s: float) -> dict[str, Any]:
        """Send one control frame and return the single answer frame's header."""
        reader, writer = await self._connect()
        try:
            writer.write(encode_frame(header, body))
            await writer.drain()
            reply, _ = await asyncio.wait_for(
                read_frame(reader, max_body_bytes=self.max_body_bytes), timeout_s
            )
            if reply["type"] == "error":
                raise RuntimeFailure(
                    f"the agent rejected a {header['type']!r} frame: {reply.get('message')}",
                    kind=reply.get("kind"),
                )
            return reply
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def ping(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The agent's ``pong``: runtime, version, pid, whether its handler loaded (``ready``)."""
        try:
            return await self._exchange({"type": "ping"}, b"", timeout_s)
        except EOFError:
            raise RuntimeFailure("the agent closed the connection without answering a ping") from None

    async def wait_ready(
        self,
        timeout_s: float,
        *,
        alive: Callable[[], Awaitable[bool]] | None = None,
        describe_death: Callable[[], Awaitable[str]] | None = None,
        signal: ReadySignal | None = None,
    ) -> dict[str, Any]:
        """Poll until the agent answers a ping; returns the pong.

        ``alive`` is checked between attempts so a sandbox whose process exited fails at once
        (with ``describe_death()`` in the message) instead of after ``timeout_s``. ``signal``: the agent's
        ready FIFO, which ends the pause between two attempts as soon as the agent listens.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.001
        last_error = "the socket does not exist yet"
        while True:
            if self.socket_path.exists():
                try:
                    return await self.ping(timeout_s=max(0.05, deadline - time.monotonic()))
                except (TimeoutError, OSError, EOFError, RuntimeFailure) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            if alive is not None and not await alive():
                why = await describe_death() if describe_death else ""
                raise RuntimeFailure(f"the function's process exited while starting. {why}".strip())
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"the agent did not become ready within {timeout_s:.1f} s ({last_error}); "
                    "check that the image has the runtime the function needs"
                )
            if signal is not None:
                await signal.wait(delay)
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, READY_POLL_MAX_S)

    async def notify_restored(self, timeout_s: float = 30.0, *, seed: str | None = None) -> dict[str, Any]:
        """Tell the agent it was restored from a snapshot: it reseeds PRNGs (from ``seed`` when given:
        a reproducible copy) and runs user hooks."""
        header: dict[str, Any] = {"type": "restored"}
        if seed is not None:
            header["seed"] = seed
        return await self._exchange(header, b"", timeout_s)

    async def unlisten(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Make the agent close its direct-address listening socket (see ``faasd.runtime.direct``)."""
        return await self._exchange({"type": "unlisten"}, b"", timeout_s)

    async def invoke(self, request: InvokeRequest, *, fork: bool | None = None) -> InvokeResult:
        result: InvokeResult | None = None
        async for event in self.invoke_stream(request, fork=fork):
            if isinstance(event, InvokeResult):
                result = event
        assert result is not None
        return result

    async def invoke_stream(
        self, request: InvokeRequest, *, fork: bool | None = None
    ) -> AsyncIterator[InvokeEvent]:
        """Yield :class:`StreamChunk` as the function writes output, then one :class:`InvokeResult`.

        Raises :class:`ResourceLimitError` when the function timed out (``details["worker_usable"]``
        tells whether the agent is still serving) and :class:`RuntimeFailure` when the agent died.
        """
        started = time.perf_counter()
        hard_deadline = None if request.timeout_s is None else request.timeout_s + TIMEOUT_GRACE_S
        output = _Output(self.max_output_bytes)
        try:
            reader, writer = await self._connect()
        except (TimeoutError, OSError) as exc:
            raise RuntimeFailure(
                f"cannot connect to the agent at {self.socket_path}: {exc}; the sandbox is probably gone",
                worker_usable=False,
            ) from None
        try:
            writer.write(encode_frame(request.header_frame(fork), request.body))
            await writer.drain()
            async with asyncio.timeout(hard_deadline):
                while True:
                    try:
                        header, body = await read_frame(reader, max_body_bytes=self.max_body_bytes)
                    except EOFError:
                        raise RuntimeFailure(
                            "the agent closed the connection before returning a result: the function's "
                            "process died (killed, out of memory, or it exited)",
                            worker_usable=False,
                        ) from None
                    kind = header["type"]
                    if kind in ("stdout", "stderr"):
                        output.add(kind, body)
                        yield StreamChunk(kind, body)
                        continue
                    total_ms = round((time.perf_counter() - started) * 1000, 3)
                    yield self._final(header, body, output, total_ms, request)
                    return
        except TimeoutError:
            raise ResourceLimitError(
                f"the function did not answer within {request.timeout_s} s and its agent did not stop it; "
                "the worker is being recycled",
                limit="timeout",
                timeout_s=request.timeout_s,
                worker_usable=False,
            ) from None
        except (ConnectionError, BrokenPipeError) as exc:
            raise RuntimeFailure(f"the connection to the agent broke: {exc}", worker_usable=False) from None
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    @staticmethod
    def _final(
        header: dict[str, Any], body: bytes, output: _Output, total_ms: float, request: InvokeRequest
    ) -> InvokeResult:
        return final_result(
            header,
            body,
            stdout=bytes(output.parts["stdout"]),
            stderr=bytes(output.parts["stderr"]),
            output_truncated=output.truncated,
            total_ms=total_ms,
            request=request,
        )


def header_pairs(raw: list[Any]) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a result frame's ``headers`` list (entries that are not
    two-element lists are dropped)."""
    return [(str(h[0]), str(h[1])) for h in raw if isinstance(h, list) and len(h) == 2]


def final_result(
    header: dict[str, Any],
    body: bytes,
    *,
    stdout: bytes,
    stderr: bytes,
    output_truncated: bool,
    total_ms: float,
    request: InvokeRequest,
) -> InvokeResult:
    """The result of an invocation from the agent's final frame (``result`` or ``error``) and the output
    it wrote. Raises :class:`ResourceLimitError` (timeout) and :class:`RuntimeFailure` (the agent refused
    the request) as :meth:`AgentClient.invoke` does."""
    timings = Timings(run_ms=header.get("run_ms"), total_ms=total_ms)
    common: dict[str, Any] = {
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": header.get("exit_code"),
        "timings": timings,
        "output_truncated": output_truncated,
    }
    kind = header["type"]
    if kind == "result":
        status = header.get("status", 200)
        raw_headers = header.get("headers") or []
        if not isinstance(status, int) or not isinstance(raw_headers, list):
            raise ProtocolError("the agent sent a malformed result frame")
        return InvokeResult(status=status, headers=header_pairs(raw_headers), body=body, **common)
    if kind == "error":
        err_kind = str(header.get("kind", "exception"))
        message = str(header.get("message", ""))
        if err_kind == "timeout":
            raise ResourceLimitError(
                f"the function did not finish within its timeout of {request.timeout_s} s",
                limit="timeout",
                timeout_s=request.timeout_s,
                worker_usable=True,
                stdout=stdout.decode("utf-8", "replace")[-4096:],
                stderr=stderr.decode("utf-8", "replace")[-4096:],
            )
        if err_kind in ("bad_request", "not_ready"):
            raise RuntimeFailure(
                f"the agent refused the request ({err_kind}): {message}\n"
                f"{header.get('traceback', '')}".rstrip(),
                kind=err_kind,
            )
        err = FunctionError(
            kind=err_kind,
            message=message,
            traceback=str(header.get("traceback", "")),
            exception=header.get("exception"),
        )
        return error_result(err, **common)
    raise ProtocolError(f"the agent answered an invoke with an unexpected {kind!r} frame")
