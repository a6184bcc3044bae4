"""The frame codec on both sides: the host's (faasd.runtime.agent_client) and the in-sandbox agent's."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import struct
from types import ModuleType

import pytest

from faasd.errors import ResourceLimitError
from faasd.runtime.agent_client import ProtocolError, encode_frame, read_frame
from faasd.runtime.agent_files import python_agent_path

pytestmark = pytest.mark.unit


def _load_agent_module(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{filename[:-3]}_under_test", python_agent_path().with_name(filename)
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def agent_mod() -> ModuleType:
    return _load_agent_module("faasd_agent.py")


@pytest.fixture(scope="module")
def results_mod() -> ModuleType:
    """The agent's handler result → HTTP mapping (``faasd_results.py``)."""
    return _load_agent_module("faasd_results.py")


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


def test_encode_layout() -> None:
    frame = encode_frame({"type": "stdout"}, b"hello")
    (n,) = struct.unpack(">I", frame[:4])
    header = json.loads(frame[4 : 4 + n])
    assert header == {"type": "stdout", "body_len": 5}
    assert frame[4 + n :] == b"hello"


def test_encode_without_body_has_no_body_len() -> None:
    frame = encode_frame({"type": "ping"})
    assert json.loads(frame[4:]) == {"type": "ping"}


async def test_host_reads_frames_in_sequence() -> None:
    data = encode_frame({"type": "stdout"}, b"a\n") + encode_frame(
        {"type": "result", "status": 201}, b"\x00\xff"
    )
    r = _reader(data)
    assert await read_frame(r) == ({"type": "stdout", "body_len": 2}, b"a\n")
    assert await read_frame(r) == ({"type": "result", "status": 201, "body_len": 2}, b"\x00\xff")
    with pytest.raises(EOFError):
        await read_frame(r)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">I", 0),  # empty header
        struct.pack(">I", 2 << 20) + b"{}",  # header over the limit
        struct.pack(">I", 3) + b"abc",  # not JSON
        struct.pack(">I", 2) + b"[]",  # not an object
        struct.pack(">I", 13) + b'{"type": 123}',  # type not a string
        struct.pack(">I", 30) + b'{"type":"x","body_len":-1}    ',  # negative body_len
        encode_frame({"type": "x"}, b"abcdef")[:-2],  # truncated body
        struct.pack(">I", 100) + b'{"type"',  # truncated header
        b"\x00\x00",  # truncated length prefix
    ],
)
async def test_host_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        await read_frame(_reader(data))


async def test_host_body_limit_is_a_resource_limit() -> None:
    frame = encode_frame({"type": "result"}, b"x" * 100)
    with pytest.raises(ResourceLimitError) as info:
        await read_frame(_reader(frame), max_body_bytes=99)
    assert info.value.details["limit"] == "response_bytes"


async def test_agent_and_host_codecs_agree(agent_mod: ModuleType) -> None:
    header = {"type": "invoke", "id": "r1", "headers": {"X": "é"}, "env": {"A": "1"}, "timeout_s": 1.5}
    body = bytes(range(256))
    host_bytes = encode_frame(header, body)
    assert agent_mod.parse_frame_bytes(host_bytes) == ({**header, "body_len": 256}, body)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(host_bytes)
        assert agent_mod.read_frame(b) == ({**header, "body_len": 256}, body)
    agent_bytes = agent_mod.encode_frame({"type": "result", "status": 200}, b"ok")
    assert await read_frame(_reader(agent_bytes)) == ({"type": "result", "status": 200, "body_len": 2}, b"ok")


def test_agent_rejects_bad_frames(agent_mod: ModuleType) -> None:
    for data in (struct.pack(">I", 0), struct.pack(">I", 5) + b"nope!", struct.pack(">I", 2) + b"{}"):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(data)
            a.shutdown(socket.SHUT_WR)
            with pytest.raises(agent_mod.ProtocolError):
                agent_mod.read_frame(b)


@pytest.mark.parametrize(
    ("value", "status", "content_type", "body"),
    [
        (b"\x01\x02", 200, "application/octet-stream", b"\x01\x02"),
        ("héllo", 200, "text/plain; charset=utf-8", "héllo".encode()),
        ({"a": [1, 2]}, 200, "application/json", b'{"a": [1, 2]}'),
        ([1, "x"], 200, "application/json", b'[1, "x"]'),
        (None, 200, None, b""),
        ({"statusCode": 404, "body": "nope"}, 404, "text/plain; charset=utf-8", b"nope"),
        (
            {"statusCode": 201, "headers": {"Content-Type": "text/csv"}, "body": "a,b"},
            201,
            "text/csv",
            b"a,b",
        ),
        (
            {"statusCode": 200, "body": "aGk=", "isBase64Encoded": True},
            200,
            "application/octet-stream",
            b"hi",
        ),
        ({"statusCode": 200, "body": {"k": 1}}, 200, "application/json", b'{"k": 1}'),
    ],
)
def test_agent_normalizes_handler_results(
    results_mod: ModuleType, value: object, status: int, content_type: str | None, body: bytes
) -> None:
    got_status, headers, got_body = results_mod.normalize_result(value)
    assert got_status == status
    assert got_body == body
    ct = [v for k, v in headers if k.lower() == "content-type"]
    assert ct == ([content_type] if content_type else [])


def test_agent_multi_value_headers(results_mod: ModuleType) -> None:
    _, headers, _ = results_mod.normalize_result(
        {"statusCode": 200, "headers": {"Set-Cookie": ["a=1", "b=2"]}, "body": ""}
    )
    assert [h for h in headers if h[0] == "Set-Cookie"] == [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]


@pytest.mark.parametrize(
    "value", [{"statusCode": "abc"}, {"statusCode": 99}, {"statusCode": 200, "headers": 5}, object()]
)
def test_agent_rejects_unusable_results(results_mod: ModuleType, value: object) -> None:
    with pytest.raises(results_mod.InvalidResponse):
        results_mod.normalize_result(value)
