"""Keyed connections to a warm worker: the daemon keeps the key, the worker serves the requests.

A connection handed to a worker (:mod:`faasd.api.handoff`) belongs to its sandbox, so one carrying
faasd's credentials cannot be handed: the key would be read in the sandbox. Yet that is how the SDK and
``faas`` call a function when auth is on. For such a connection (first request: an invocation with a
valid key that may invoke, no ``Cookie``) the gateway hands the worker one end of a Unix socket pair
instead of the client's TCP socket, and relays between the two: each request head the client sends is
checked here (the same ``Authorization`` value, still a valid key with the ``invoke`` scope, within its
rate limit, HTTP/1.1, framed by ``Content-Length``), the credential line is taken out, and the rest goes
to the worker; the worker's answers come back byte for byte. The worker serves and reports exactly as on
a handed connection (its gate, its records); the key's id rides in the gate (``tag``) so the access log
names it.

A request the relay does not pass (another or no key, a revoked or rate-limited one, a cookie, chunked
framing, a malformed head) is held back: the relay ends its half of the socket pair, the worker finishes
what it has and closes its end, and the connection continues on this server with the held bytes (whose
answer -- 401, 403, 429, ... -- is the app's). A worker that gives the connection back itself (a failed
function, a drain) returns its end of the pair: the answers it wrote go out first, then the daemon's, then
what the worker had not served, with the credential line put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Protocol

from faasd.errors import FaasdError
from faasd.platform.keys import KeyInfo

HEAD_LIMIT = 64 * 1024
"""A request head longer than this goes to the app (which answers it)."""
READ_BYTES = 64 * 1024
_AUTH = b"\r\nauthorization:"
_LENGTH = b"\r\ncontent-length:"


def admit_head(head: bytes) -> tuple[bytes, bytes, int] | None:
    """``head`` (request line to the blank line, included) without its credential line, the credential's
    value and the body's length; None: the relay does not pass it (see the module)."""
    low = head.lower()
    line_end = low.find(b"\r\n")
    if not low[:line_end].endswith(b" http/1.1"):
        return None
    i = low.find(_AUTH)
    if i < 0 or low.count(b"authorization") != 1 or b"cookie" in low or b"transfer-encoding" in low:
        return None
    j = head.find(b"\r\n", i + 2)
    value = head[i + len(_AUTH) : j].strip()
    length = 0
    c = low.find(_LENGTH)
    if c >= 0:
        if low.find(_LENGTH, c + 2) >= 0:
            return None
        e = low.find(b"\r\n", c + 2)
        declared = head[c + len(_LENGTH) : e].strip()
        if not declared.isdigit():
            return None
        length = int(declared)
    return head[:i] + head[j:], value, length


def restore_credentials(stripped: bytes, value: bytes) -> bytes:
    """Requests the relay passed (``stripped``, the last one possibly cut short) with their credential
    line put back: what the client sent, for the daemon to serve."""
    out: list[bytes] = []
    pos, n = 0, len(stripped)
    line = b"\r\nauthorization: " + value
    while pos < n:
        end = stripped.find(b"\r\n\r\n", pos)
        line_end = stripped.find(b"\r\n", pos)
        if end < 0:  # a head cut short (the relay passes whole ones: not seen, but kept right)
            out += (stripped[pos:line_end], line, stripped[line_end:]) if line_end >= 0 else (stripped[pos:],)
            break
        head = stripped[pos : end + 4]
        out += (stripped[pos:line_end], line, stripped[line_end : end + 4])
        length = 0
        c = head.lower().find(_LENGTH)
        if c >= 0:
            length = int(head[c + len(_LENGTH) : head.find(b"\r\n", c + 2)].strip())
        out.append(stripped[end + 4 : end + 4 + length])
        pos = end + 4 + length
    return b"".join(out)


class RelayOwner(Protocol):
    """What a relay's connection returns to: the daemon's HTTP server (:mod:`faasd.api.handoff`)."""

    def serve_here(self, transport: asyncio.Transport, answer: bytes, keep: bool, rest: bytes) -> None:
        """Serve the client connection on this server from now on: ``answer`` first, then ``rest``."""

    def relay_ended(self, relay: KeyedRelay) -> None: ...


class Credentials(Protocol):
    """The key checks a relayed request passes (the platform's key service and rate limiter)."""

    def verify(self, token: str) -> KeyInfo: ...

    def check_rate(self, key: KeyInfo) -> None: ...


RELAYING, TAKING_BACK, ENDED = "relaying", "taking back", "ended"


class KeyedRelay(asyncio.Protocol):
    """One client connection relayed to a worker over a socket pair (the client transport's protocol)."""

    def __init__(
        self,
        owner: RelayOwner,
        transport: asyncio.Transport,
        pair: socket.socket,
        value: bytes,
        token: str,
        key: KeyInfo,
        credentials: Credentials,
        worker_inode: int,
    ) -> None:
        self.owner = owner
        self.worker_inode = worker_inode
        """The inode of the worker's end of the pair (:func:`socket_inode`)."""
        self.transport = transport
        self.pair = pair
        """The daemon's end of the socket pair (the worker holds the other)."""
        self.value = value
        self.token = token
        self.key = key
        self.credentials = credentials
        self.state = RELAYING
        self.held = b""
        """Client bytes not passed (original form): a partial head while relaying, all of them once taking
        back."""
        self.body_left = 0
        self.out = b""
        """Passed bytes the socket pair has not taken yet."""
        self.client_eof = False
        self._reading_client = True
        self._loop = asyncio.get_running_loop()
        pair.setblocking(False)
        self._fd = pair.fileno()
        self._loop.add_reader(self._fd, self._from_worker)
        transport.set_protocol(self)

    # -- client -> worker
    def data_received(self, data: bytes) -> None:
        if self.state != RELAYING:
            self.held += data
            return
        work = self.held + data if self.held else data
        pos, n = 0, len(work)
        passed: list[bytes] = []
        while pos < n:
            if self.body_left:
                take = min(n - pos, self.body_left)
                passed.append(work[pos : pos + take])
                pos += take
                self.body_left -= take
                continue
            end = work.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > HEAD_LIMIT or work.find(b"\n\n", pos) >= 0:
                    self._take_back(passed, work[pos:])
                    return
                break
            admitted = self._admit(work[pos : end + 4])
            if admitted is None:
                self._take_back(passed, work[pos:])
                return
            passed.append(admitted[0])
            self.body_left = admitted[1]
            pos = end + 4
        self.held = work[pos:]
        if passed:
            self._send(passed[0] if len(passed) == 1 else b"".join(passed))

    def _admit(self, head: bytes) -> tuple[bytes, int] | None:
        admitted = admit_head(head)
        if admitted is None or admitted[1] != self.value:
            return None
        try:
            key = self.credentials.verify(self.token)
            if key is not self.key and key != self.key:
                return None
            self.credentials.check_rate(key)
        except FaasdError:
            return None
        return admitted[0], admitted[2]

    def _send(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        try:
            sent = self.pair.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.end()
            return
        if sent < len(data):
            self.out = data[sent:]
            self._loop.add_writer(self._fd, self._flush)
            self._pause_client()

    def _flush(self) -> None:
        try:
            sent = self.pair.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.end()
            return
        self.out = self.out[sent:]
        if self.out:
            return
        self._loop.remove_writer(self._fd)
        if self.state == TAKING_BACK or self.client_eof:
            self._shut_pair()
        else:
            self._resume_client()

    def _take_back(self, passed: list[bytes], held: bytes) -> None:
        """Pass what was passed, hold the rest, and let the worker finish: its end of the pair closes."""
        self.state = TAKING_BACK
        self.held = held
        self.body_left = 0
        if passed:
            self._send(b"".join(passed))
            if self.state == ENDED:  # the pair broke: the relay and the client's connection are closed
                return
        if len(self.held) > HEAD_LIMIT:
            self._pause_client()
        if not self.out:
            self._shut_pair()

    def _shut_pair(self) -> None:
        with contextlib.suppress(OSError):
            self.pair.shutdown(socket.SHUT_WR)

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.state == RELAYING and not self.out:
            self._shut_pair()
        return True  # the worker's answers may still be on their way

    def connection_lost(self, exc: Exception | None) -> None:
        self.end()

    def pause_writing(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)

    def resume_writing(self) -> None:
        if self.state != ENDED:
            self._loop.add_reader(self._fd, self._from_worker)

    def _pause_client(self) -> None:
        if self._reading_client:
            self._reading_client = False
            self.transport.pause_reading()

    def _resume_client(self) -> None:
        if not self._reading_client:
            self._reading_client = True
            self.transport.resume_reading()

    # -- worker -> client
    def _from_worker(self) -> None:
        try:
            data = self.pair.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.transport.write(data)
            return
        # The worker closed its end: after the client's end of file, after a request that closes the
        # connection, or because the relay is taking the connection back.
        if self.state == TAKING_BACK:
            rest = self.held
            self._detach()
            self.owner.serve_here(self.transport, b"", True, rest)
        else:
            self.end()

    def given_back(self, worker_end: socket.socket, rest: bytes, answer: bytes, keep: bool) -> None:
        """The worker gave its end back (a failed function, a drain): its answers, then ``answer``, then
        what it had not served (credentials restored) and what the relay held continue on this server."""
        written = self._drain(self.pair)
        if written:
            self.transport.write(written)
        unread = self._drain(worker_end)
        with contextlib.suppress(OSError):
            worker_end.close()
        passed = rest + unread + self.out
        tail = restore_credentials(passed, self.value) if passed else b""
        held = self.held
        self._detach()
        self.owner.serve_here(self.transport, answer, keep, tail + held)

    @staticmethod
    def _drain(sock: socket.socket) -> bytes:
        parts = []
        while True:
            try:
                data = sock.recv(READ_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError, OSError):
                break
            if not data:
                break
            parts.append(data)
        return b"".join(parts)

    def _detach(self) -> None:
        """Stop relaying (the client transport stays open)."""
        if self.state == ENDED:
            return
        self.state = ENDED
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(Exception):
            self._loop.remove_writer(self._fd)
        with contextlib.suppress(OSError):
            self.pair.close()
        self._resume_client()
        self.owner.relay_ended(self)

    def end(self) -> None:
        """Close the relay and the client's connection."""
        self._detach()
        self.transport.close()


def socket_inode(sock: socket.socket) -> int:
    """The inode of ``sock`` (a socket passed over SCM_RIGHTS keeps it: how a given-back end is known)."""
    return os.fstat(sock.fileno()).st_ino
