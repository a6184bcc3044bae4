"""The agent's side of the frame protocol (``../PROTOCOL.md``): a 4-byte big-endian length, a JSON header,
then ``body_len`` bytes. Standard library only (Python 3.8+); the host's codec is
``faasd.runtime.agent_client`` (the agent cannot import faasd)."""

from __future__ import annotations

import json
import os
import socket
import struct

MAX_HEADER_BYTES = 1 << 20
MAX_BODY_BYTES = 1 << 30
LEN = struct.Struct(">I")


class ProtocolError(Exception):
    pass


def encode_frame(header: dict, body: bytes = b"") -> bytes:
    if body:
        header = dict(header, body_len=len(body))
    raw = json.dumps(header, separators=(",", ":"), default=str).encode("utf-8")
    return LEN.pack(len(raw)) + raw + bytes(body)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ProtocolError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[dict, bytes]:
    (size,) = LEN.unpack(recv_exact(sock, 4))
    if size == 0 or size > MAX_HEADER_BYTES:
        raise ProtocolError(f"bad header length {size}")
    try:
        header = json.loads(recv_exact(sock, size).decode("utf-8"))
    except ValueError as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("header must be a JSON object with a string 'type'")
    body_len = header.get("body_len", 0)
    if not isinstance(body_len, int) or body_len < 0 or body_len > MAX_BODY_BYTES:
        raise ProtocolError(f"bad body_len {body_len!r}")
    body = recv_exact(sock, body_len) if body_len else b""
    return header, body


def read_exact_fd(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise ProtocolError(f"pipe closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame_fd(fd: int) -> tuple[dict, bytes]:
    """One frame from a pipe (the request handed to a forked child)."""
    (size,) = LEN.unpack(read_exact_fd(fd, 4))
    header = json.loads(read_exact_fd(fd, size).decode("utf-8"))
    body_len = int(header.get("body_len", 0))
    return header, read_exact_fd(fd, body_len) if body_len else b""


def parse_frame_bytes(data: bytes) -> tuple[dict, bytes]:
    """Parse one complete frame held in memory (what a forked child wrote to its result pipe)."""
    if len(data) < 4:
        raise ProtocolError("truncated frame")
    (size,) = LEN.unpack_from(data)
    header = json.loads(data[4 : 4 + size].decode("utf-8"))
    body_len = int(header.get("body_len", 0))
    body = data[4 + size : 4 + size + body_len]
    if len(body) != body_len:
        raise ProtocolError("truncated frame body")
    return header, body


def frame_complete(data: bytearray) -> bool:
    if len(data) < 4:
        return False
    (size,) = LEN.unpack_from(data)
    if len(data) < 4 + size:
        return False
    try:
        body_len = int(json.loads(bytes(data[4 : 4 + size])).get("body_len", 0))
    except (ValueError, AttributeError):
        return False
    return len(data) >= 4 + size + body_len
