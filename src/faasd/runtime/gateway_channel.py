"""Gateway hand-off, daemon side of one worker: the channel its agent keeps open after the hand-over.

The Python agent of a ``cached`` function in in-process mode receives the direct-address socket with
the byte ``G`` and keeps the hand-over connection open (:mod:`faasd.runtime.direct`): this channel. The
daemon's gateway passes client connections into the sandbox over it (:meth:`GatewayChannel.hand`: the
TCP socket with SCM_RIGHTS, the bytes already read and the connection's gate), and the agent answers
with frames (the agent protocol's framing, ``agents/PROTOCOL.md``):

* ``report``: the records of requests it served (a batch), bodies and output after the JSON;
* ``back``: a connection given back (its socket in the ancillary data), with the bytes not yet served
  and, when the function failed, the record of the request the daemon is to answer;
* ``drained``: every handed connection went back (after :meth:`GatewayChannel.drain`).

What the daemon does with them is the :class:`GatewaySink`'s (the API layer sets it on first use).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from faasd.runtime.agent_client import encode_frame

log = logging.getLogger(__name__)

MAX_FRAME_HEADER = 1 << 20
HAND_BUFFER_BYTES = 1 << 20
DRAIN_TIMEOUT_S = 2.0
_FD_SPACE = socket.CMSG_SPACE(array.array("i").itemsize * 16)


@dataclass
class HandedRequest:
    """One request an agent served (or failed) on a handed-over connection, as it reported it."""

    id: str
    method: str
    path: str
    """The request's path as the client sent it (the gateway route, not the function's path)."""
    query: str
    headers: dict[str, str]
    """The request headers the function saw (the gate's forwarding rule: the agent reports no others)."""
    final: dict[str, Any]
    """The agent's final frame header (``result`` or ``error``; agent protocol)."""
    body: bytes
    """The request body (at most the stored limit + 1 byte)."""
    result: bytes
    """The final frame's body (at most the stored limit + 1 byte)."""
    stdout: bytes
    stderr: bytes
    wall_ms: float
    started: float
    """``time.time()`` when the agent began serving it."""
    status: int | None = None
    """The HTTP status the agent sent (None: the daemon answers, see :attr:`HandedBack.request`)."""
    keep: bool = True
    """The client keeps the connection open after this request."""
    tag: str | None = None
    """The connection's ``tag`` from its gate (a relayed connection's API key id)."""


@dataclass
class HandedBack:
    """A connection an agent gave back: its socket, the bytes it had not served, and the request whose
    answer the daemon is to write first (None: nothing to answer)."""

    sock: socket.socket
    rest: bytes
    request: HandedRequest | None = None


class GatewaySink(Protocol):
    def reported(self, channel: GatewayChannel, requests: list[HandedRequest]) -> None: ...

    def handed_back(self, channel: GatewayChannel, back: HandedBack) -> None: ...


@dataclass
class _Reader:
    buf: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)


class GatewayChannel:
    """The daemon's end of one agent's gateway channel (non-blocking; read from the event loop)."""

    def __init__(self, sock: socket.socket, function: str, worker_id: str) -> None:
        self.sock = sock
        self.function = function
        self.worker_id = worker_id
        self.sink: GatewaySink | None = None
        self.on_close: Callable[[GatewayChannel], None] | None = None
        """Called once when the channel closes (the registry drops it)."""
        self.connections = 0
        """Connections handed over and not given back (as far as the daemon knows)."""
        self.closed = False
        self.tags: set[str] = set()
        """The ``tag`` of every gate handed over this channel: a report naming another is not believed."""
        self._reader = _Reader()
        self._drained: asyncio.Event | None = None
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HAND_BUFFER_BYTES)
        self._loop.add_reader(sock.fileno(), self._readable)

    def hand(self, conn: socket.socket, data: bytes, gate: dict[str, Any]) -> bool:
        """Pass the client connection ``conn`` (with ``data`` read from it so far) to the agent. False
        when the channel is closed or full (the caller serves the connection itself)."""
        if self.closed:
            return False
        frame = encode_frame({"type": "conn", "gate": gate}, data)
        fds = array.array("i", [conn.fileno()])
        try:
            sent = self.sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.close()
            return False
        if sent < len(frame):
            # The descriptor went with the first byte; the rest must follow or the stream is broken.
            try:
                self._send_rest(frame[sent:])
            except OSError:
                self.close()
        self.connections += 1
        tag = gate.get("tag")
        if tag is not None:
            self.tags.add(str(tag))
        return True

    def _send_rest(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.settimeout(5.0)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    async def drain(self) -> None:
        """Ask the agent to give every handed connection back, and wait (bounded) until it did (its
        ``drained``, or the channel closing after an ``unlisten``)."""
        if self.closed or self.connections <= 0:
            return
        self._drained = asyncio.Event()
        with contextlib.suppress(OSError):  # an agent that already closed its end gave them back first
            self._send_rest(encode_frame({"type": "drain"}))
        try:
            await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("worker %s did not give its gateway connections back in time", self.worker_id)
        finally:
            self._drained = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(OSError):
            self.sock.close()
        for fd in self._reader.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reader.fds.clear()
        if self._drained is not None:
            self._drained.set()
        if self.on_close is not None:
            self.on_close(self)

    # -- frames from the agent
    def _readable(self) -> None:
        r = self._reader
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(1 << 18, _FD_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - (len(raw) % fds.itemsize)])
                r.fds.extend(fds)
        if not data:
            self.close()
            return
        r.buf += data
        while len(r.buf) >= 4:
            (n,) = struct.unpack(">I", r.buf[:4])
            if n > MAX_FRAME_HEADER:
                log.error("worker %s sent a malformed gateway frame; closing its channel", self.worker_id)
                self.close()
                return
            if len(r.buf) < 4 + n:
                return
            header = json.loads(bytes(r.buf[4 : 4 + n]))
            blen = int(header.get("body_len") or 0)
            if len(r.buf) < 4 + n + blen:
                return
            body = bytes(r.buf[4 + n : 4 + n + blen])
            del r.buf[: 4 + n + blen]
            try:
                self._frame(header, body)
            except Exception:
                log.exception("handling a gateway frame from worker %s failed", self.worker_id)

    def _frame(self, header: dict[str, Any], body: bytes) -> None:
        kind = header.get("type")
        if kind == "report":
            records = header.get("records") or []
            reqs, _ = _requests(records, body, self.tags)
            if self.sink is not None and reqs:
                self.sink.reported(self, reqs)
        elif kind == "back":
            fd = self._reader.fds.pop(0) if self._reader.fds else None
            record = header.get("record")
            lens = [int(x) for x in header.get("lens") or []]
            used = sum(lens)
            req = _request(record, body[:used], lens, self.tags) if record else None
            self.connections = max(0, self.connections - 1)
            if fd is None:
                log.error("worker %s gave a connection back without its socket", self.worker_id)
                return
            back = HandedBack(socket.socket(fileno=fd), body[used:], req)
            if self.sink is None:
                back.sock.close()
            else:
                self.sink.handed_back(self, back)
        elif kind == "drained":
            self.connections = 0
            if self._drained is not None:
                self._drained.set()


def _requests(
    records: list[dict[str, Any]], body: bytes, tags: set[str]
) -> tuple[list[HandedRequest], int]:
    out: list[HandedRequest] = []
    pos = 0
    for rec in records:
        lens = [int(x) for x in rec.get("lens") or []]
        total = sum(lens)
        out.append(_request(rec, body[pos : pos + total], lens, tags))
        pos += total
    return out, pos


EXECUTION_ID = re.compile(r"ex_[0-9a-f]{24}")
"""The form of an execution id (``faasd.platform.executions.records.new_execution_id``), which the agent
makes for the requests it serves: anything else in a report is refused (the row's primary key)."""


def _request(rec: dict[str, Any], blob: bytes, lens: list[int], tags: set[str]) -> HandedRequest:
    """One record of a report (or of a ``back``); its ``tag`` is kept only if it is one of ``tags``, those
    the daemon handed over the channel."""
    ex_id = str(rec["id"])
    if not EXECUTION_ID.fullmatch(ex_id):
        raise ValueError(f"a report names execution {ex_id[:60]!r}, not an execution id")
    parts: list[bytes] = []
    pos = 0
    for n in [*lens, 0, 0, 0, 0][:4]:
        parts.append(blob[pos : pos + n])
        pos += n
    status = rec.get("status")
    tag = rec.get("tag")
    return HandedRequest(
        id=ex_id,
        method=str(rec["method"]),
        path=str(rec["path"]),
        query=str(rec.get("query") or ""),
        headers={str(k): str(v) for k, v in (rec.get("headers") or {}).items()},
        final=dict(rec.get("final") or {}),
        body=parts[0],
        result=parts[1],
        stdout=parts[2],
        stderr=parts[3],
        wall_ms=float(rec.get("ms") or 0.0),
        started=float(rec.get("t") or 0.0),
        status=int(status) if status is not None else None,
        keep=bool(rec.get("keep", True)),
        tag=tag if isinstance(tag, str) and tag in tags else None,
    )


class GatewayRegistry:
    """The open gateway channels of each function's warm workers (the worker factory adds them; a
    channel that closes removes itself, so a deleted function leaves nothing here)."""

    def __init__(self) -> None:
        self._by_function: dict[str, list[GatewayChannel]] = {}

    def add(self, function: str, channel: GatewayChannel) -> None:
        if channel.closed:
            return
        self._by_function.setdefault(function, []).append(channel)
        channel.on_close = lambda c: self._discard(function, c)

    def _discard(self, function: str, channel: GatewayChannel) -> None:
        channels = self._by_function.get(function)
        if channels is not None and channel in channels:
            channels.remove(channel)
            if not channels:
                del self._by_function[function]

    def pick(self, function: str, among: set[str]) -> GatewayChannel | None:
        """The open channel of ``function`` holding the fewest handed connections among the workers
        ``among`` (ids), if any."""
        eligible = [c for c in self._by_function.get(function, ()) if c.worker_id in among]
        return min(eligible, key=lambda c: c.connections) if eligible else None

    def channel_count(self) -> int:
        """Open channels held, all functions together."""
        return sum(len(c) for c in self._by_function.values())
