"""Direct function address: HTTP/1.1 served by the agent on a listening socket handed in by the host.

The host (faasd daemon) binds a TCP socket on the function's direct address (``127.x.y.z`` on the
host loopback, label ``lo:faas``) and passes it into the sandbox over SCM_RIGHTS: the agent connects
to ``/run/faasd-io/direct.sock`` at start-up and receives the descriptor with ``recvmsg``. The socket
belongs to the host's network namespace (the sandbox itself has none but its own ``lo``): clients on
the host reach the handler with no proxy in between. Every warm worker of a function gets the same
listening socket; whichever agent accepts first serves the connection.

Standard library only, Python 3.8+. Requests are served one at a time, in the agent's main loop,
multiplexed with the agent protocol socket (keep-alive and pipelining are supported; chunked request
bodies are not: send ``Content-Length``).
"""

from __future__ import annotations

import array
import contextlib
import selectors
import socket
import sys

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
IO_TIMEOUT_S = 60.0
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


def receive_listener(path: str, timeout_s: float = 30.0) -> socket.socket:
    """Connect to the host's hand-over socket at ``path`` and receive the listening socket (SCM_RIGHTS)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        fds = array.array("i")
        _msg, ancdata, _flags, _addr = s.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise OSError("the host sent no listening socket")
    return socket.socket(fileno=fds[0])


class _Conn:
    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()


class DirectServer:
    """Serves HTTP on ``listener`` and the agent protocol on ``agent_listener`` from one select loop."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.listener.setblocking(False)
        self.requests = 0
        self._sel: selectors.BaseSelector | None = None
        self._conns: dict[int, _Conn] = {}

    def close(self) -> None:
        """Stop serving the direct address in this sandbox (open connections are closed)."""
        sel = self._sel
        for c in list(self._conns.values()):
            self._drop(c)
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
        try:
            while still_direct():
                for key, _ in sel.select():
                    if key.data == "agent":
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
            sock.settimeout(IO_TIMEOUT_S)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            sel.register(sock, selectors.EVENT_READ, conn)

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
        while conn.buf:
            keep = self._one_request(conn, invoke)
            if keep is None:
                return  # incomplete: wait for more bytes
            if not keep:
                self._drop(conn)
                return

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
        path, _, query = target.partition("?")
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
            conn.sock.sendall("".join(parts).encode("latin-1", "replace") + body)
        except OSError:
            return False
        return keep
