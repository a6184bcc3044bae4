"""The agent's client connections (``faasd_direct._Conn``): non-blocking sockets whose ``send`` writes
everything, waiting only for what the kernel did not take at once, and gives up on a client that reads
nothing for the I/O time limit."""

from __future__ import annotations

import socket
import threading
import time
from types import ModuleType

import pytest
from agent_modules import load_agent_module

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def direct() -> ModuleType:
    return load_agent_module("faasd_direct")  # it imports its sibling faasd_handoff


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def test_a_send_larger_than_the_socket_buffer_arrives_whole(direct: ModuleType) -> None:
    ours, client = _pair()
    conn = direct._Conn(ours)
    assert ours.gettimeout() == 0.0, "client sockets are non-blocking"
    data = bytes(range(256)) * 8192  # 2 MiB: far more than the kernel takes at once
    got = bytearray()

    def slow_reader() -> None:
        while len(got) < len(data):
            time.sleep(0.001)
            chunk = client.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    conn.send(data)
    reader.join(timeout=30)
    assert bytes(got) == data
    assert ours.gettimeout() == 0.0, "non-blocking again after waiting for the client"
    ours.close()
    client.close()


def test_a_client_that_reads_nothing_fails_the_send_after_the_time_limit(
    direct: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "IO_TIMEOUT_S", 0.3)
    ours, client = _pair()
    conn = direct._Conn(ours)
    with pytest.raises(OSError):
        conn.send(b"x" * (4 << 20))
    assert ours.gettimeout() == 0.0
    ours.close()
    client.close()
