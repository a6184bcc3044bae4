"""Direct function address: HTTP/1.1 served by the agent on a listening socket handed in by the host.

The host (faasd daemon) binds a TCP socket on the function's direct address (``127.x.y.z`` on the
host loopback, label ``lo:faas``) and passes it into the sandbox over SCM_RIGHTS: the agent connects
to ``/run/faasd-io/direct.sock`` at start-up and receives the descriptor with ``recvmsg``. The socket
belongs to the host's network namespace (the sandbox itself has none but its own ``lo``): clients on
the host reach the handler with no proxy in between. Every warm worker of a function gets the same
listening socket; whichever agent accepts first serves the connection.

Standard library only, Python 3.8+. Requests are served one at a time, in the agent's main loop,
multiplexed with the agent protocol socket (keep-alive and pipelining are supported; chunked request
bodies are not: send ``Content-Length``). The same loop serves the connections the daemon's gateway
hands over (:mod:`faasd_handoff`).
"""

from __future__ import annotations

import array
import contextlib
import os
import selectors
import socket
import sys
import time

import faasd_handoff

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
IO_TIMEOUT_S = 60.0
SWEEP_S = 1.0
"""How often idle handed connections are looked for (see ``Gate.idle_s``)."""
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_SKIP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def receive_listener(path: str, timeout_s: float = 30.0) -> tuple[socket.socket, socket.socket | None]:
    """Connect to the host's hand-over socket at ``path`` and receive the listening socket (SCM_RIGHTS).

    Returns the listener and, when the host sent ``G``, the connection itself: the gateway channel."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
        s.connect(path)
        fds = array.array("i")
        msg, ancdata, _flags, _addr = s.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    except BaseException:
        s.close()
        raise
    if not fds:
        s.close()
        raise OSError("the host sent no listening socket")
    if msg == b"G":
        return socket.socket(fileno=fds[0]), s
    s.close()
    return socket.socket(fileno=fds[0]), None


class _Conn:
    """A client connection. Its socket is non-blocking (Python polls before every operation on a socket
    with a timeout: two more system calls per request); the select loop says when to read, and
    :meth:`send` waits (at most :data:`IO_TIMEOUT_S`) only for what the kernel did not take at once."""

    __slots__ = ("buf", "gate", "last", "sock")

    def __init__(self, sock: socket.socket, gate: faasd_handoff.Gate | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buf = bytearray()
        self.gate = gate
        self.last = time.monotonic()
        """When the client last sent something or was last answered (idle connections are closed)."""

    def send(self, data: bytes) -> None:
        """All of ``data``, or OSError (also when the client takes nothing for :data:`IO_TIMEOUT_S`)."""
        sock = self.sock
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            sock.settimeout(IO_TIMEOUT_S)
            try:
                sock.sendall(memoryview(data)[sent:])
            finally:
                sock.setblocking(False)


class DirectServer:
    """Serves HTTP on ``listener`` and the agent protocol on ``agent_listener`` from one select loop."""

    def __init__(
        self, listener: socket.socket, channel: socket.socket | None = None, gate_invoke=None
    ) -> None:
        self.listener = listener
        self.listener.setblocking(False)
        self.requests = 0
        self.channel = faasd_handoff.Channel(channel) if channel is not None and gate_invoke else None
        if channel is not None and self.channel is None:
            channel.close()
        self.gate_invoke = gate_invoke
        """``gate_invoke(header, body, output_limit)``: the final frame (header, body), stdout, stderr."""
        self._sel: selectors.BaseSelector | None = None
        self._conns: dict[int, _Conn] = {}
        self._next_sweep = time.monotonic() + SWEEP_S

    def close(self) -> None:
        """Stop serving the direct address in this sandbox (open connections are closed; those the gateway
        handed over go back to it first)."""
        sel = self._sel
        for c in list(self._conns.values()):
            if c.gate is not None:
                self._hand_back(c)
            self._drop(c)
        if self.channel is not None:
            if sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(self.channel.sock)
            self.channel.close()
            self.channel = None
        if sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(self.listener)
        with contextlib.suppress(OSError):
            self.listener.close()

    def serve(self, agent_listener: socket.socket, on_agent_conn, invoke, still_direct) -> None:
        """Loop until ``still_direct()`` turns false (then return: the caller serves the agent socket alone).

        ``on_agent_conn(conn)`` serves one agent-protocol connection; ``invoke(method, path, query,
        headers, body)`` returns ``(status, [[name, value], ...], body)``."""
        sel = self._sel = selectors.DefaultSelector()
        sel.register(agent_listener, selectors.EVENT_READ, "agent")
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        if self.channel is not None:
            sel.register(self.channel.sock, selectors.EVENT_READ, "channel")
        try:
            while still_direct():
                timeout = None
                channel = self.channel
                if channel is not None:
                    channel.push()
                    timeout = channel.due()
                    if timeout is not None and timeout <= 0:
                        channel.flush()
                        timeout = channel.due()
                if self._conns:
                    now = time.monotonic()
                    if now >= self._next_sweep:
                        self._sweep(now)
                    left = self._next_sweep - now
                    timeout = left if timeout is None else min(timeout, left)
                for key, _ in sel.select(timeout):
                    if key.data == "channel":
                        self._channel_events(sel, invoke)
                    elif key.data == "agent":
                        try:
                            conn, _ = agent_listener.accept()
                        except (InterruptedError, BlockingIOError):
                            continue
                        on_agent_conn(conn)
                        if not still_direct():
                            return
                    elif key.data == "accept":
                        self._accept(sel)
                    else:
                        self._read(key.data, invoke)
        finally:
            with contextlib.suppress(Exception):
                sel.close()
            self._sel = None

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker sharing the listener took it
            except OSError:
                return
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            sel.register(sock, selectors.EVENT_READ, conn)

    # -- connections from the daemon's gateway (faasd_handoff)
    def _channel_events(self, sel: selectors.BaseSelector, invoke) -> None:
        channel = self.channel
        if channel is None:
            return
        for header, body, fd in channel.read():
            kind = header.get("type")
            if kind == "conn" and fd is not None:
                sock = socket.socket(fileno=fd)
                try:
                    gate = faasd_handoff.Gate(header["gate"])
                except Exception as exc:  # never let one bad hand-over take the agent down
                    print(f"faasd agent: gave a handed connection back: {exc!r}", file=sys.stderr, flush=True)
                    refused = _Conn(sock)
                    refused.buf += body
                    self._hand_back(refused)
                    sock.close()
                    continue
                conn = _Conn(sock, gate)
                conn.buf += body
                self._conns[sock.fileno()] = conn
                sel.register(sock, selectors.EVENT_READ, conn)
                self._serve_buffered(conn, invoke)
            elif kind == "drain":
                for c in list(self._conns.values()):
                    if c.gate is not None:
                        self._hand_back(c)
                        self._drop(c)
                channel.send({"type": "drained"})
        if channel.closed:
            # The daemon is gone: its records cannot be written, so its connections end here.
            for c in list(self._conns.values()):
                if c.gate is not None:
                    self._drop(c)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(channel.sock)
            channel.close()
            self.channel = None

    def _hand_back(self, conn: _Conn, record: dict | None = None, parts: list | None = None) -> None:
        """Give ``conn`` back to the daemon with its unserved bytes (and the record of a request it is to
        answer); without a channel the connection just closes."""
        if self.channel is None:
            return
        parts = list(parts or [])
        rest = bytes(conn.buf)
        header = {"type": "back", "record": record, "lens": [len(p) for p in parts], "rest": len(rest)}
        self.channel.flush()  # records of earlier requests first: the daemon writes them in order
        self.channel.send(header, b"".join(parts) + rest, conn.sock.fileno())

    def _gated(self, conn: _Conn, method, path, fn_path, query, headers, body: bytes, keep: bool) -> bool:
        """Serve one request of a handed-over connection as the gateway would, and report it."""
        gate = conn.gate
        assert gate is not None and self.gate_invoke is not None
        meta = gate.meta
        ex_id = f"ex_{time.time_ns() // 1000 & 0xFFFFFFFFFFFF:012x}{os.urandom(6).hex()}"  # the daemon's form
        started = time.time()
        t0 = time.perf_counter()
        seen = gate.event_headers(headers)  # what the function sees, and all the daemon records
        header = {
            "type": "invoke",
            "id": ex_id,
            "method": method,
            "path": fn_path,
            "query": query,
            "headers": seen,
            "timeout_s": meta.get("timeout_s"),
        }
        channel = self.channel
        if channel is not None:
            due = channel.due()
            if due is not None and due <= 0:
                channel.flush()  # records never wait for a slow request
        fh, fb, out, err = self.gate_invoke(header, body, int(meta["output_limit"]))
        fh.pop("body_len", None)
        store = int(meta["store_limit"]) + 1  # the daemon cuts (and flags) what is longer
        record = {
            "id": ex_id,
            "method": method,
            "path": path,
            "query": query,
            "headers": seen,
            "final": fh,
            "t": started,
            "ms": 0.0,
            "keep": keep,
        }
        tag = meta.get("tag")
        if tag is not None:
            record["tag"] = tag
        parts = [body[:store], fb[:store], bytes(out), bytes(err)]
        if fh.get("type") != "result":
            record["ms"] = round((time.perf_counter() - t0) * 1000, 3)
            self._hand_back(conn, record, parts)
            return False
        status = int(fh.get("status") or 200)
        run_ms = fh.get("run_ms")
        duration = float(run_ms) if run_ms is not None else (time.perf_counter() - t0) * 1000
        data = gate.answer(
            status, fh.get("headers") or [], ex_id, duration, b"" if method == "HEAD" else fb, keep
        )
        try:
            conn.send(data)
        except OSError:
            keep = False
        record["ms"] = round((time.perf_counter() - t0) * 1000, 3)
        record["status"] = status
        if self.channel is not None:
            self.channel.report(record, parts)
        return keep

    def _serve_buffered(self, conn: _Conn, invoke) -> None:
        while conn.buf:
            keep = self._one_request(conn, invoke)
            if keep is None:
                return  # incomplete: wait for more bytes
            if not keep:
                self._drop(conn)
                return

    def _drop(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _read(self, conn: _Conn, invoke) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buf += data
        self._serve_buffered(conn, invoke)
        conn.last = time.monotonic()

    def _sweep(self, now: float) -> None:
        """Close handed connections idle (nothing buffered) for longer than their gate's ``idle_s``, as the
        daemon's HTTP server closes its own idle connections."""
        self._next_sweep = now + SWEEP_S
        for c in list(self._conns.values()):
            idle = c.gate.idle_s if c.gate is not None else None
            if idle is not None and not c.buf and now - c.last > idle:
                self._drop(c)

    def _one_request(self, conn: _Conn, invoke):
        """Serve the first complete request in ``conn.buf``: True (keep the connection), False (close it),
        None (not complete yet)."""
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._send(conn, 431, [], b"request head too large\n", False)
                return False
            return None
        try:
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            length = int(headers.get("content-length") or 0)
        except ValueError:
            self._send(conn, 400, [], b"malformed request\n", False)
            return False
        path, _, query = target.partition("?")
        fn_path = None
        if conn.gate is not None:
            fn_path = conn.gate.function_path(method, path, query, headers, length)
            if fn_path is None:  # the daemon's to serve: the connection goes back with this request
                self._hand_back(conn)
                return False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            msg = b"chunked request bodies are not supported; send Content-Length\n"
            self._send(conn, 411, [], msg, False)
            return False
        if length < 0 or length > MAX_BODY_BYTES:
            self._send(conn, 413, [], b"request body too large\n", False)
            return False
        if len(buf) < end + 4 + length:
            return None
        body = bytes(buf[end + 4 : end + 4 + length])
        del buf[: end + 4 + length]
        conn_hdr = headers.get("connection", "").lower()
        keep = ("close" not in conn_hdr) if version == "HTTP/1.1" else ("keep-alive" in conn_hdr)
        if conn.gate is not None:
            return self._gated(conn, method, path, fn_path, query, headers, body, keep)
        self.requests += 1
        try:
            status, out_headers, out_body = invoke(method, path or "/", query, headers, body)
        except Exception as exc:  # the agent turns handler failures into results; this is a bug guard
            print(f"faasd agent: direct request failed: {exc!r}", file=sys.stderr, flush=True)
            status, out_headers, out_body = 500, [], b"internal error\n"
        if method == "HEAD":
            out_body = b""
        return self._send(conn, status, out_headers, out_body, keep)

    def _send(self, conn: _Conn, status: int, headers, body: bytes, keep: bool) -> bool:
        parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"]
        for name, value in headers:
            if str(name).lower() not in _SKIP_HEADERS:
                parts.append(f"{name}: {value}\r\n")
        parts.append(f"content-length: {len(body)}\r\n")
        if not keep:
            parts.append("connection: close\r\n")
        parts.append("\r\n")
        try:
            conn.send("".join(parts).encode("latin-1", "replace") + body)
        except OSError:
            return False
        return keep
