"""The keyed relay (:mod:`faasd.api.relay`): which request heads it passes and how, the credential line put
back on what a worker gives back, and the relay's decisions on a real socket pair (the client transport
and the server it returns to are test doubles: what is checked is the orchestration)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd.api.relay import KeyedRelay, admit_head, restore_credentials, socket_inode
from faasd.errors import AuthError
from faasd.platform.errors import RateLimitedError
from faasd.platform.keys import KeyInfo

pytestmark = pytest.mark.unit

KEY = KeyInfo("key_1", "ci", frozenset({"invoke"}), None, None)
VALUE = b"Bearer sekrit"


def req(body: bytes = b"x", value: bytes = VALUE, extra: bytes = b"") -> bytes:
    return (
        b"POST /api/v1/functions/f/invoke HTTP/1.1\r\nauthorization: "
        + value
        + b"\r\nHost: h\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def test_admit_head_takes_the_credential_line_out() -> None:
    head = b"POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\nContent-Length: 3\r\n\r\n"
    assert admit_head(head) == (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", b"Bearer k", 3)
    last = b"GET /x HTTP/1.1\r\nauthorization:Bearer k\r\n\r\n"
    assert admit_head(last) == (b"GET /x HTTP/1.1\r\n\r\n", b"Bearer k", 0)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /x HTTP/1.0\r\nAuthorization: Bearer k\r\n\r\n",  # not HTTP/1.1
        b"POST /x HTTP/1.1\r\nHost: h\r\n\r\n",  # no credential
        b"POST /x HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",  # two
        b"POST /x HTTP/1.1\r\nAuthorization : a\r\n\r\n",  # a name the relay does not read as one
        b"POST /authorization HTTP/1.1\r\nAuthorization: a\r\n\r\n",  # the word anywhere else
        b"POST /x HTTP/1.1\r\nAuthorization: a\r\nCookie: s=1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nAuthorization: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nAuthorization: a\r\nContent-Length: -1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nAuthorization: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    ],
)
def test_admit_head_refuses_what_the_app_must_see(head: bytes) -> None:
    assert admit_head(head) is None


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(
    st.lists(st.tuples(_token, st.binary(max_size=40), st.lists(_token, max_size=3)), min_size=1, max_size=5),
    st.integers(min_value=0, max_value=60),
)
def test_restore_puts_back_what_the_relay_took_out(
    requests: list[tuple[str, bytes, list[str]]], cut: int
) -> None:
    original = b"".join(
        req(body, extra=b"".join(f"x-{h}: {h}\r\n".encode() for h in hs)) for _, body, hs in requests
    )
    stripped, pos = [], 0
    while pos < len(original):
        end = original.find(b"\r\n\r\n", pos) + 4
        admitted = admit_head(original[pos:end])
        assert admitted is not None and admitted[1] == VALUE
        stripped.append(admitted[0] + original[end : end + admitted[2]])
        pos = end + admitted[2]
    passed = b"".join(stripped)
    assert restore_credentials(passed, VALUE) == original
    # the last request's body cut short (the rest still coming from the client): put back as far as it goes
    cut = min(cut, len(requests[-1][1]))
    assert restore_credentials(passed[: len(passed) - cut], VALUE) == original[: len(original) - cut]
    # (the relay passes whole heads only; a head cut after its request line still gets its key back)
    head = req(b"")
    assert (
        restore_credentials(admit_head(head)[0][:50], VALUE)
        == head[: 50 + len(b"authorization: ") + 2 + len(VALUE)]
    )  # type: ignore[index]


@dataclass
class FakeTransport:
    """The client's transport as far as the relay uses it."""

    written: list[bytes] = field(default_factory=list)
    closed: bool = False
    paused: bool = False
    protocol: object = None

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


@dataclass
class FakeOwner:
    served: list[tuple[bytes, bool, bytes]] = field(default_factory=list)
    ended: list[KeyedRelay] = field(default_factory=list)

    def serve_here(self, transport: object, answer: bytes, keep: bool, rest: bytes) -> None:
        self.served.append((answer, keep, rest))

    def relay_ended(self, relay: KeyedRelay) -> None:
        self.ended.append(relay)


@dataclass
class FakeCredentials:
    revoked: bool = False
    limited: bool = False

    def verify(self, token: str) -> KeyInfo:
        if self.revoked or token != "sekrit":
            raise AuthError("invalid API key")
        return KEY

    def check_rate(self, key: KeyInfo) -> None:
        if self.limited:
            raise RateLimitedError("slow down")


def relay_on_pair(creds: FakeCredentials) -> tuple[KeyedRelay, socket.socket, FakeTransport, FakeOwner]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, owner = FakeTransport(), FakeOwner()
    relay = KeyedRelay(owner, transport, ours, VALUE, "sekrit", KEY, creds, socket_inode(theirs))  # type: ignore[arg-type]
    assert transport.protocol is relay
    return relay, theirs, transport, owner


async def until(cond: object) -> None:
    for _ in range(200):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


def recv_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


async def test_relay_passes_requests_without_the_key_and_answers_back() -> None:
    relay, worker, transport, owner = relay_on_pair(FakeCredentials())
    one, two = req(b"a"), req(b"bb")
    relay.data_received(one + two[:20])  # a whole request and the start of the next
    relay.data_received(two[20:])
    passed = recv_all(worker)
    assert b"sekrit" not in passed and passed.count(b"POST /api/v1") == 2
    assert passed.endswith(b"\r\n\r\nbb")
    worker.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    await until(lambda: transport.written)
    assert transport.written == [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]
    # the client goes: the worker's end sees the end of file, and its close ends the relay
    relay.eof_received()
    assert worker.recv(10) == b""
    worker.close()
    await until(lambda: transport.closed)
    assert owner.ended == [relay] and owner.served == []


@pytest.mark.parametrize("change", ["other key", "revoked", "rate limited", "cookie"])
async def test_a_request_the_relay_does_not_pass_goes_back_to_the_server_unchanged(change: str) -> None:
    creds = FakeCredentials()
    relay, worker, transport, owner = relay_on_pair(creds)
    relay.data_received(req(b"a"))
    second = {
        "other key": req(b"b", value=b"Bearer other"),
        "revoked": req(b"b"),
        "rate limited": req(b"b"),
        "cookie": req(b"b", extra=b"Cookie: s=1\r\n"),
    }[change]
    creds.revoked = change == "revoked"
    creds.limited = change == "rate limited"
    relay.data_received(second + b"GET")
    relay.data_received(b" /more")  # held too, not looked at
    passed = recv_all(worker)
    assert passed.endswith(b"\r\n\r\na") and b"\r\n\r\nb" not in passed  # the first only, then end of file
    worker.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # the worker answers what it had
    worker.close()
    await until(lambda: owner.served)
    assert owner.served == [(b"", True, second + b"GET /more")]
    assert transport.written == [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"] and not transport.closed
    assert owner.ended == [relay]


async def test_a_connection_the_worker_gives_back_continues_with_its_key() -> None:
    relay, worker, transport, owner = relay_on_pair(FakeCredentials())
    first, second, third = req(b"boom"), req(b"next"), req(b"later")
    relay.data_received(first + second + third[:30])
    passed = recv_all(worker)  # the worker read everything, failed on the first, served nothing else
    one = admit_head(first[: first.index(b"\r\n\r\n") + 4])
    assert one is not None
    worker.send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # an answer it wrote before
    relay.given_back(worker, passed[len(one[0]) + 4 :], b"ERR", True)
    # its answers first, then the daemon's, then the unserved requests with their key, in order
    assert transport.written == [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]
    assert owner.served == [(b"ERR", True, second + third[:30])]
    assert owner.ended == [relay] and not transport.closed


async def test_given_back_restores_every_passed_request_in_order() -> None:
    relay, worker, _transport, owner = relay_on_pair(FakeCredentials())
    first, second, third = req(b"boom"), req(b"next"), req(b"later")
    relay.data_received(first + second + third[:30])
    one = admit_head(first[: first.index(b"\r\n\r\n") + 4])
    assert one is not None
    worker.recv(len(one[0]) + len(b"boom"))  # the worker read (and failed on) the first request only
    relay.given_back(worker, b"", b"ERR", True)
    assert owner.served == [(b"ERR", True, second + third[:30])]


async def test_a_worker_gone_while_taking_back_closes_the_connection() -> None:
    relay, worker, transport, owner = relay_on_pair(FakeCredentials())
    worker.close()  # the worker's end is gone (its sandbox died)
    relay.data_received(req(b"a") + req(b"b", value=b"Bearer other"))  # one to pass, one to hold
    assert transport.closed and owner.ended == [relay] and owner.served == []
