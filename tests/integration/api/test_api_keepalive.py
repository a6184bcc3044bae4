"""Idle HTTP connections: the daemon keeps them open longer than clients keep theirs idle.

httpx (and the SDK) drop an idle connection after 5 s. Were the daemon's own idle time-out as short, a
client could send its next request just as the server closes the connection, and fail with "server
disconnected without sending a response" (seen once under 1000 concurrent invocations). So a
connection left idle for longer than a client's expiry must still serve the next request.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from faasd.sdk.client import DEFAULT_LIMITS
from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "none"}) as srv:
        yield srv


def _get(sock: socket.socket, host: str) -> bytes:
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data  # the server closed the connection
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lengths = [int(ln.split(b":")[1]) for ln in lines if ln.lower().startswith(b"content-length")]
    length = lengths[0] if lengths else 0
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_an_idle_connection_outlives_the_clients_keepalive_expiry(server: FaasdServer) -> None:
    host = server.url.removeprefix("http://")
    addr, port = host.rsplit(":", 1)
    idle_s = (DEFAULT_LIMITS.keepalive_expiry or 5.0) + 2.0
    with socket.create_connection((addr, int(port)), timeout=30) as sock:
        assert _get(sock, host).startswith(b"HTTP/1.1 200"), "first request failed"
        time.sleep(idle_s)  # longer than any client keeps an idle connection (not a timing assertion)
        again = _get(sock, host)
    assert again.startswith(b"HTTP/1.1 200"), f"the daemon closed a connection idle for {idle_s} s: {again!r}"
