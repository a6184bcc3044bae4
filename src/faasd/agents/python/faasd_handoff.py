"""Gateway hand-off, agent side: HTTP connections the daemon's gateway passes into the sandbox.

When the daemon hands the direct-address socket over with the byte ``G`` (instead of ``L``), the Unix
connection it used stays open as the **gateway channel**. The daemon's gateway reads the first request
of a new client connection to ``/function/<name>`` or ``/api/v1/functions/<name>/invoke``; when a warm
worker of that function has a channel, it passes the client's TCP socket itself over the channel
(SCM_RIGHTS) with the bytes it already read and the connection's **gate**: what later requests on the
connection must match for the agent to serve them (the same route prefix, the same ``Authorization``
header, a body within the daemon's limit, ...). From then on the agent serves the connection with no
proxy in between and reports every request (execution id, request, result, captured output) back over
the channel in batches; the daemon writes the execution records, metrics and access log from them.

A request the gate refuses, a request whose handler failed (the daemon renders its error answer), a
``drain`` from the daemon (before the worker stops or is checkpointed) and the channel closing all give
the connection back to the daemon with the bytes not yet served (``back`` frame, the socket in the
ancillary data). Frames are the agent protocol's (``u32`` JSON header length, header, ``body_len`` bytes).

Standard library only, Python 3.8+.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import struct
import time
from http import HTTPStatus

from faasd_frames import encode_frame

MAX_FRAME_HEADER = 1 << 20
REPORT_BATCH = 128
"""Records sent in one ``report`` at most; a batch goes out once full or :data:`REPORT_DELAY_S` old."""
REPORT_DELAY_S = 0.01
"""How long a record may wait for others: the daemon is woken once per batch, not once per request."""
OUT_LIMIT = 16 * 1024 * 1024
"""Reports kept while the daemon does not read (a pause, a burst of its own work) before the agent waits for
it: requests are not held up by the daemon's bookkeeping."""
OUT_RETRY_S = 0.005
_FD_SPACE = socket.CMSG_SPACE(array.array("i").itemsize * 8)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Channel:
    """The gateway channel: frames (some carrying one socket) both ways, reports batched."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(True)
        self._buf = bytearray()
        self._fds: list[int] = []
        self._records: list[dict] = []
        self._parts: list[bytes] = []
        self._first = 0.0
        self._out = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list:
        """Frames that arrived, as ``(header, body, fd or None)``; an empty list and ``closed`` at EOF."""
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(262144, _FD_SPACE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data, anc = b"", []
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - (len(raw) % fds.itemsize)])
                self._fds.extend(fds)
        if not data:
            self.closed = True
            return []
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (n,) = struct.unpack(">I", self._buf[:4])
            if n > MAX_FRAME_HEADER:
                self.closed = True
                return out
            if len(self._buf) < 4 + n:
                break
            header = json.loads(bytes(self._buf[4 : 4 + n]))
            blen = int(header.get("body_len") or 0)
            if len(self._buf) < 4 + n + blen:
                break
            body = bytes(self._buf[4 + n : 4 + n + blen])
            del self._buf[: 4 + n + blen]
            fd = self._fds.pop(0) if header.get("type") == "conn" and self._fds else None
            out.append((header, body, fd))
        return out

    def send(self, header: dict, body: bytes = b"", fd: int | None = None) -> bool:
        """Send a frame now (after the queued reports: order is kept), waiting for room if need be."""
        if self.closed:
            return False
        data = encode_frame(header, body)
        try:
            if self._out:
                self.sock.sendall(self._out)
                self._out.clear()
            if fd is None:
                self.sock.sendall(data)
            else:
                sent = self.sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                )
                if sent < len(data):
                    self.sock.sendall(data[sent:])
        except OSError:
            self.closed = True
            return False
        return True

    def push(self) -> None:
        """Send what of the queued reports the socket takes now, without waiting."""
        while self._out and not self.closed:
            try:
                sent = self.sock.send(self._out, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                self._out.clear()
                return
            del self._out[:sent]
        if len(self._out) > OUT_LIMIT:  # the daemon stopped reading: wait for it rather than grow
            try:
                self.sock.sendall(self._out)
            except OSError:
                self.closed = True
            self._out.clear()

    def report(self, record: dict, parts: list) -> None:
        """Queue one record; ``parts`` (bytes) follow the JSON, their lengths in ``lens``."""
        record["lens"] = [len(p) for p in parts]
        if not self._records:
            self._first = time.monotonic()
        self._records.append(record)
        self._parts.extend(parts)
        if len(self._records) >= REPORT_BATCH:
            self.flush()

    def due(self):
        """Seconds until the pending batch must go (<= 0: now), None when nothing is pending; while reports
        wait for the socket, at most :data:`OUT_RETRY_S`."""
        if not self._records:
            return OUT_RETRY_S if self._out else None
        left = self._first + REPORT_DELAY_S - time.monotonic()
        return min(left, OUT_RETRY_S) if self._out else left

    def flush(self) -> None:
        if not self._records:
            return
        records, parts = self._records, self._parts
        self._records, self._parts = [], []
        if not self.closed:
            self._out += encode_frame({"type": "report", "records": records}, b"".join(parts))
        self.push()

    def close(self) -> None:
        self.flush()
        if self._out and not self.closed:
            with contextlib.suppress(OSError):
                self.sock.sendall(self._out)  # the records the daemon has not read yet
            self._out.clear()
        self.closed = True
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        with contextlib.suppress(OSError):
            self.sock.close()


class Gate:
    """What the daemon allows on one handed-off connection, and how its answers look (the daemon's)."""

    __slots__ = (
        "deny",
        "drop",
        "fwd",
        "idle_s",
        "limit",
        "meta",
        "methods",
        "openfaas",
        "prefix",
        "query_ok",
        "refuse",
    )

    def __init__(self, meta: dict) -> None:
        self.meta = meta
        self.prefix = str(meta["prefix"])
        self.refuse = tuple(meta.get("refuse") or ())
        self.limit = int(meta["limit"])
        self.methods = frozenset(meta["methods"])
        self.query_ok = bool(meta.get("query_ok"))
        self.openfaas = bool(meta.get("openfaas"))
        self.fwd = tuple(meta["fwd"])
        self.deny = frozenset(meta["deny"])
        self.drop = frozenset(meta["drop"])
        idle = meta.get("idle_s")
        self.idle_s = float(idle) if idle is not None else None
        """An idle connection (nothing buffered) is closed after this long (None: never)."""

    def function_path(self, method: str, path: str, query: str, headers: dict, length: int):
        """The path the function sees for this request, or None: the daemon serves it."""
        if method not in self.methods or length > self.limit or (query and not self.query_ok):
            return None
        if "transfer-encoding" in headers or "expect" in headers or "upgrade" in headers:
            return None
        for name in self.refuse:  # faasd's credentials: the daemon's to check, never served here
            if name in headers:
                return None
        if "content-length" not in headers and method in ("POST", "PUT", "PATCH"):
            return None  # the daemon's answer to a body without framing, not ours
        if path == self.prefix:
            return "/"
        if self.openfaas and path.startswith(self.prefix + "/"):
            return path[len(self.prefix) :]
        return None

    def event_headers(self, headers: dict) -> dict:
        """The headers the function sees (the daemon's ``forwardable_headers`` rule, sent as data)."""
        return {k: v for k, v in headers.items() if k not in self.deny and k.startswith(self.fwd)}

    def answer(
        self, status: int, headers: list, ex_id: str, duration_ms: float, body: bytes, keep: bool
    ) -> bytes:
        """The head and body the daemon's gateway would send for this result."""
        merged: dict = {}
        for name, value in headers:
            k = str(name).lower()
            merged[k] = f"{merged[k]}, {value}" if k in merged else str(value)
        out = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
        server = self.meta.get("server")
        if server:
            out.append(f"server: {server}\r\n")
        out.append(f"date: {_http_date()}\r\n")
        for k, v in merged.items():
            if k not in self.drop:
                out.append(f"{k}: {v}\r\n")
        out.append(f"x-execution-id: {ex_id}\r\nx-cold-start: false\r\nx-duration-ms: {duration_ms:.3f}\r\n")
        if self.openfaas:
            out.append(f"x-call-id: {ex_id}\r\n")
        if "content-type" not in merged:
            out.append("content-type: application/octet-stream\r\n")
        out.append(f"content-length: {len(body)}\r\n")
        if not keep:
            out.append("connection: close\r\n")
        out.append("\r\n")
        return "".join(out).encode("latin-1", "replace") + body


_date_cache = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache[0] = now
        _date_cache[1] = (
            f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
        )
    return _date_cache[1]


_REASONS = {int(s): s.phrase for s in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Status")
