"""The daemon's end of a worker's gateway channel (``faasd.runtime.gateway_channel``): report frames become
:class:`HandedRequest` records for the sink, a channel that closes leaves the registry, and only the
workers asked for are picked."""

from __future__ import annotations

import asyncio
import socket

import pytest

from faasd.runtime.agent_client import encode_frame
from faasd.runtime.gateway_channel import GatewayChannel, GatewayRegistry, HandedBack, HandedRequest

pytestmark = pytest.mark.unit


class _Sink:
    def __init__(self) -> None:
        self.requests: list[HandedRequest] = []
        self.got = asyncio.Event()

    def reported(self, channel: GatewayChannel, requests: list[HandedRequest]) -> None:
        self.requests.extend(requests)
        self.got.set()

    def handed_back(self, channel: GatewayChannel, back: HandedBack) -> None:
        back.sock.close()


EX_ID = "ex_0123456789abcdef01234567"


async def test_reports_become_records_and_a_closed_channel_leaves_the_registry() -> None:
    ours, agent = socket.socketpair()
    registry = GatewayRegistry()
    channel = GatewayChannel(ours, "fn", "w1")
    registry.add("fn", channel)
    sink = _Sink()
    channel.sink = sink
    assert registry.pick("fn", {"w2"}) is None  # a busy worker is not a target
    assert registry.pick("fn", {"w1"}) is channel

    record = {
        "id": EX_ID,
        "method": "POST",
        "path": "/function/fn",
        "query": "",
        "headers": {"x-a": "1"},
        "final": {"type": "result", "status": 200},
        "status": 200,
        "t": 1.0,
        "ms": 0.5,
        "lens": [2, 4, 3, 0],
    }
    agent.sendall(encode_frame({"type": "report", "records": [record]}, b"hi" + b"echo" + b"out"))
    await asyncio.wait_for(sink.got.wait(), 5)
    (req,) = sink.requests
    assert (req.id, req.body, req.result, req.stdout, req.stderr) == (EX_ID, b"hi", b"echo", b"out", b"")
    assert req.status == 200 and req.keep and req.headers == {"x-a": "1"}

    # a report naming something that is not an execution id (the row's primary key) is refused
    sink.got.clear()
    for bad in ("ex_1", "ex_" + "A" * 24, "x" * 4000, EX_ID + "0"):
        agent.sendall(
            encode_frame({"type": "report", "records": [{**record, "id": bad}]}, b"hi" + b"echo" + b"out")
        )
    agent.sendall(encode_frame({"type": "report", "records": [record]}, b"hi" + b"echo" + b"out"))
    await asyncio.wait_for(sink.got.wait(), 5)
    assert [r.id for r in sink.requests] == [EX_ID, EX_ID]

    agent.close()  # the agent went away: the channel closes and drops out
    for _ in range(100):
        if channel.closed:
            break
        await asyncio.sleep(0.01)
    assert channel.closed and registry.channel_count() == 0
    assert registry.pick("fn", {"w1"}) is None


async def test_a_reported_tag_is_believed_only_if_handed_over_that_channel() -> None:
    ours, agent = socket.socketpair()
    channel = GatewayChannel(ours, "fn", "w1")
    sink = _Sink()
    channel.sink = sink
    conn, other = socket.socketpair()
    with conn, other:
        assert channel.hand(conn, b"", {"tag": "key_a"})
    record = {
        "id": EX_ID,
        "method": "POST",
        "path": "/function/fn",
        "final": {"type": "result"},
        "status": 200,
        "lens": [0, 0, 0, 0],
    }
    for tag in ("key_a", "key_b", ["key_a"]):  # handed; another key's id; not even a string
        agent.sendall(encode_frame({"type": "report", "records": [{**record, "tag": tag}]}))
    for _ in range(100):
        if len(sink.requests) == 3:
            break
        await asyncio.sleep(0.01)
    assert [r.tag for r in sink.requests] == ["key_a", None, None]
    channel.close()
    agent.close()
