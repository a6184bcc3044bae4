"""Gateway hand-off: the client's connection itself goes to a warm worker, the kernel does the rest.

A Python gateway pays ~0.7 ms of CPU per proxied invocation, a fraction of what a worker answers on its
own. So the daemon's HTTP server reads the **first** request of each new connection and, when it is an
invocation (``/function/<name>[/...]`` or ``POST /api/v1/functions/<name>/invoke``) of a function with a
warm Python worker serving its direct address in process mode, passes the client's TCP socket into that
worker's sandbox over the worker's gateway channel (SCM_RIGHTS, :mod:`faasd.runtime.gateway_channel`)
together with the bytes read so far and the connection's *gate*. The agent then serves that request and
every later one on the connection that passes the gate, answering exactly as the gateway would
(``X-Execution-Id``, ``X-Cold-Start``, ``X-Duration-Ms``, ``X-Call-Id``, the same header policy), and
reports each request back; :class:`GatewayHandoff` writes the execution record, the invocation metrics,
``faasd_http_requests_total`` and the access log line from the report, as the fast path does.

The gate is what the daemon checked on the first request: the route prefix (``/function/<name>`` or the
exact invoke path, no query for the latter), the methods, the payload limit. Requests the gate refuses, a
function that failed (the daemon renders its error answer from the report), workers stopping, scaling down
or being snapshotted all give the connection back here (``back``): it continues on this server as any other
connection (:meth:`GatewayHandoff.resume`).

**Credentials.** A handed connection belongs to the function's sandbox: whatever the client sends on it
later is read there first. faasd's own credentials never go into a sandbox (``runtime.headers.CREDENTIALS``),
so only connections whose first request carries neither ``Authorization`` nor ``Cookie`` are handed: the
OpenFaaS routes while ``FAASD_FUNCTION_AUTH`` is off (they need no key), the API route only when auth is off.
A connection whose first request invokes with an API key where one is needed is *relayed* instead
(:mod:`faasd.api.relay`): the worker gets one end of a socket pair, the key stays in the daemon.
A later request with either header is given back (the gate's ``refuse``) -- but the sandbox has seen it by
then: a client should not send faasd credentials on a connection it used for an unauthenticated function
call (the SDK and faas-cli set credentials per client, on every request, so their connections are never
handed).

Not handed either: requests that are not complete in the first read, chunked or ``Expect`` requests,
HTTP/1.0, ``Connection: close``, functions without an open channel (none warm, Node, ``http`` mode, fork
mode, restored workers), workers the pool has a request on or queued for (those keep their order and their
``running`` records; a handed request's record is written once it was served). ``FAASD_GATEWAY_HANDOFF=false``
turns it off. A connection belongs to one worker for its life: load spreads by connection, not by request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Literal

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from faasd.api.accesslog import AccessLog
from faasd.api.auth import ANONYMOUS, token_from_header
from faasd.api.fastpath import (
    FUNCTION_METHODS,
    RequestCounter,
    RouteMatch,
    error_answer,
    internal_error_answer,
    invoking_key,
    match,
    route_needs_key,
)
from faasd.api.invoke import RESPONSE_DROP, function_response
from faasd.api.relay import KeyedRelay, admit_head, socket_inode
from faasd.api.routes_openfaas import address_function_id
from faasd.errors import FaasdError
from faasd.platform.core import Platform
from faasd.platform.executions.records import FORWARDED_HEADER_PREFIXES, NOT_FORWARDED, STORED_BODY_LIMIT
from faasd.platform.invocation import Invocation, Outcome
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import function_id
from faasd.runtime.agent_client import DEFAULT_MAX_OUTPUT_BYTES
from faasd.runtime.gateway_channel import GatewayChannel, HandedBack, HandedRequest
from faasd.runtime.headers import CREDENTIALS

log = logging.getLogger("faasd.api")

SERVER_HEADER = "uvicorn"
"""What the daemon's HTTP server writes as ``server`` (uvicorn's default): handed answers write the same."""
_REASONS = {int(s): s.phrase for s in HTTPStatus}


class GatewayHandoff:
    """Decides which new connections go to a worker, and writes down what the workers report."""

    def __init__(self, platform: Platform, access: AccessLog, requests: RequestCounter) -> None:
        self.platform = platform
        self.access = access
        self.requests = requests
        self.enabled = platform.settings.gateway_handoff
        self.limit = platform.settings.max_payload_bytes
        self._gate: dict[str, Any] = {
            "refuse": sorted(CREDENTIALS),
            "limit": self.limit,
            "fwd": list(FORWARDED_HEADER_PREFIXES),
            "deny": sorted(NOT_FORWARDED),
            "drop": sorted(RESPONSE_DROP),
            "output_limit": DEFAULT_MAX_OUTPUT_BYTES,
            "store_limit": STORED_BODY_LIMIT,
            "server": SERVER_HEADER,
            "idle_s": platform.settings.keep_alive_s,
        }
        """The part of every gate that does not depend on the connection."""
        self._openfaas_methods = sorted(FUNCTION_METHODS)
        self.relay_keyed = platform.settings.gateway_relay
        self._credentials = _PlatformCredentials(platform)
        self._relays: dict[int, KeyedRelay] = {}
        """Relayed connections by the inode of the worker's end of their socket pair."""
        self.closing = False
        self._protocol: tuple[Any, Any, Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.protocol_class = protocol_for(self)
        """The uvicorn ``http`` protocol class of a server with this hand-off."""

    # -- the first request of a connection
    def offer(self, proto: HandoffHttpProtocol, data: bytes) -> bool:
        """Hand (or relay) the connection whose first bytes are ``data`` to a worker; False: serve it here."""
        if not self.enabled:
            return False
        transport = proto.transport
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        try:
            lines = data[:end].decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            return False
        if version != "HTTP/1.1":
            return False
        path, _, query = target.partition("?")
        m = match(method, path, query.encode("latin-1"))
        if m is None:
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            name = name.strip().lower()
            if not sep or name in headers:
                return False  # malformed or repeated: the app's to answer or join
            headers[name] = value.strip()
        if "transfer-encoding" in headers or "expect" in headers or "upgrade" in headers:
            return False
        if "close" in headers.get("connection", "").lower():
            return False
        if "cookie" in headers:
            return False  # a console session: the app's (CSRF checks live there)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return False
        keyed = self._keyed(m, headers.get("authorization"), data[: end + 4])
        if keyed is False:
            return False  # faasd's credentials never go into a sandbox (see the module)
        try:
            fid = self._target(m.openfaas, m.name) if keyed is None else self._keyed_target(m, keyed.key)
            fn = self.platform.executions.function_record(fid)
        except (FaasdError, _NotHanded):
            return False  # served here: the app answers what needs answering
        pool = self.platform.runner.pools.get(fid)
        if pool is None or pool.closed:
            return False
        # Only to a worker the pool has nothing running on and no request queued for: the pool's
        # invocations (async ones, streams) keep their order and their running records.
        channel = self.platform.gateways.pick(fid, pool.idle_worker_ids())
        if channel is None:
            return False
        channel.sink = self
        gate = {
            **self._gate,
            "prefix": path if not m.openfaas else "/function/" + m.name,
            "methods": self._openfaas_methods if m.openfaas else ["POST"],
            "query_ok": m.openfaas,
            "openfaas": m.openfaas,
            "timeout_s": fn.timeout_s,
        }
        if keyed is not None:
            return self._relay(proto, channel, fid, gate, data, keyed)
        if not channel.hand(sock, data, gate):
            return False
        self.platform.metrics.handoffs.labels(fid).inc()
        transport.close()  # the worker holds the connection now
        return True

    def _keyed(self, m: RouteMatch, authorization: str | None, head: bytes) -> _Keyed | Literal[False] | None:
        """For a request with an ``Authorization`` header: its key when the route needs one, this one may
        invoke and the relay passes the head (the connection is relayed); False when it is the app's to
        serve; None: no such header."""
        if authorization is None:
            return None
        if not route_needs_key(self.platform.settings, m.openfaas) or not self.relay_keyed:
            return False  # the header is the function's (not ours to keep), or no key is needed
        admitted = admit_head(head)
        if admitted is None:
            return False
        try:
            token = token_from_header(authorization)
            if token is None:
                return False
            key = invoking_key(self.platform, token, check_rate=False)  # the relay checks it per request
        except FaasdError:
            return False  # the app answers 401 / 403
        return _Keyed(token, key, admitted[1])

    def _keyed_target(self, m: RouteMatch, key: KeyInfo) -> str:
        if m.openfaas:
            return address_function_id(m.name, key)
        return function_id(m.name, self.platform.namespaces.require(key.access.target(None)))

    def _relay(
        self,
        proto: HandoffHttpProtocol,
        channel: GatewayChannel,
        fid: str,
        gate: dict[str, Any],
        data: bytes,
        keyed: _Keyed,
    ) -> bool:
        """Relay the connection to ``channel``'s worker (:mod:`faasd.api.relay`): the key stays here."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            worker_inode = socket_inode(theirs)
            if not channel.hand(theirs, b"", {**gate, "tag": keyed.key.id}):
                ours.close()
                return False
        finally:
            theirs.close()  # the worker's copy is the one that counts
        proto.connections.discard(proto)  # uvicorn's protocol steps aside for the relay
        relay = KeyedRelay(
            self, proto.transport, ours, keyed.value, keyed.token, keyed.key, self._credentials, worker_inode
        )
        self._relays[worker_inode] = relay
        self.platform.metrics.relays.labels(fid).inc()
        self.platform.metrics.relays_open.inc()
        relay.data_received(data)
        return True

    def _target(self, openfaas: bool, name: str) -> str:
        """The function's id for a request without credentials; raises :class:`_NotHanded` when the route
        needs a key (the app answers it)."""
        settings = self.platform.settings
        if openfaas and not settings.function_auth:
            return address_function_id(name, None)
        if settings.auth:
            raise _NotHanded()  # an API key would travel on the connection: never into a sandbox
        if openfaas:
            return address_function_id(name, ANONYMOUS)
        return function_id(name, self.platform.namespaces.require(ANONYMOUS.access.target(None)))

    # -- GatewaySink: what the workers send back
    def reported(self, channel: GatewayChannel, requests: list[HandedRequest]) -> None:
        matched = [match(req.method, req.path, req.query.encode("latin-1")) for req in requests]
        served = [(req, m.path if m is not None else "/") for req, m in zip(requests, matched, strict=True)]
        for i in self.platform.executions.record_served(channel.function, served):
            try:
                self._record(channel, requests[i], matched[i])
            except FaasdError as exc:
                log.warning("execution %s of %s: %s", requests[i].id, channel.function, exc.message)
        for req, m in zip(requests, matched, strict=True):
            assert req.status is not None
            self._count(req, m, req.status)

    def handed_back(self, channel: GatewayChannel, back: HandedBack) -> None:
        self.platform.metrics.handbacks.labels(channel.function).inc()
        task = asyncio.get_running_loop().create_task(self.resume(channel, back))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self, channel: GatewayChannel, back: HandedBack) -> None:
        """Serve a connection a worker gave back: first the answer to its failed request (if any), then
        whatever the client sent after it, on this server (a relayed one: through its relay)."""
        answer = b""
        keep = True
        if back.request is not None:
            req = back.request
            keep = req.keep
            m = match(req.method, req.path, req.query.encode("latin-1"))
            try:
                outcome = self._record(channel, req, m)
                extra = {"X-Call-Id": outcome.execution_id} if m is not None and m.openfaas else None
                response = function_response(outcome, extra)
            except FaasdError as exc:
                response = error_answer(self.platform, exc)
            except Exception as exc:
                response = internal_error_answer(self.platform, req.method, req.path, exc)
            self._count(req, m, response.status_code)
            answer = render(response, keep)
        relay = self._relays.get(socket_inode(back.sock))
        if relay is not None:
            relay.given_back(back.sock, back.rest, answer, keep)
            return
        if back.sock.family == socket.AF_UNIX:  # the end of a relay that is gone with its client
            back.sock.close()
            return
        if self._protocol is None or self.closing:
            back.sock.close()
            return
        config, server_state, app_state = self._protocol
        loop = asyncio.get_running_loop()
        back.sock.setblocking(False)
        with contextlib.suppress(OSError):
            # The protocol writes the answer and takes the given-back bytes in connection_made, before the
            # transport reads the socket: what the client sends later must come after them.
            await loop.connect_accepted_socket(
                lambda: _resumed_protocol(self, config, server_state, app_state, answer, keep, back.rest),
                back.sock,
            )
            return
        with contextlib.suppress(OSError):
            back.sock.close()

    # -- RelayOwner: relayed connections coming back to this server
    def serve_here(self, transport: asyncio.Transport, answer: bytes, keep: bool, rest: bytes) -> None:
        if self._protocol is None or self.closing:
            if answer:
                transport.write(answer)
            transport.close()
            return
        config, server_state, app_state = self._protocol
        proto = _resumed_protocol(self, config, server_state, app_state, answer, keep, rest)
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def relay_ended(self, relay: KeyedRelay) -> None:
        if self._relays.pop(relay.worker_inode, None) is not None:
            self.platform.metrics.relays_open.dec()

    def close(self) -> None:
        """The server is stopping: relayed connections end (given-back ones are not served any more)."""
        self.closing = True
        for relay in list(self._relays.values()):
            relay.end()

    def _record(self, channel: GatewayChannel, req: HandedRequest, m: RouteMatch | None) -> Outcome:
        path = m.path if m is not None else "/"
        inv = Invocation(body=req.body, headers=req.headers, path=path, method=req.method, query=req.query)
        return self.platform.executions.record_handed(
            channel.function, inv, req, output_limit=DEFAULT_MAX_OUTPUT_BYTES
        )

    def _count(self, req: HandedRequest, m: RouteMatch | None, status: int) -> None:
        route = m.route if m is not None else req.path
        self.requests.count(req.method, route, status)
        self.access.record(req.started, req.method, req.path, route, status, req.wall_ms, req.tag)

    def remember(self, config: Any, server_state: Any, app_state: Any) -> None:
        if self._protocol is None:
            self._protocol = (config, server_state, app_state)


@dataclass(frozen=True, slots=True)
class _Keyed:
    token: str
    key: KeyInfo
    value: bytes
    """The ``Authorization`` header's value as the client sent it."""


class _PlatformCredentials:
    """:class:`faasd.api.relay.Credentials` from the platform's key service and rate limiter."""

    def __init__(self, platform: Platform) -> None:
        self.verify = platform.keys.verify
        self.check_rate = platform.rate_limiter.check


class _NotHanded(Exception):
    """The connection is served here (raised before anything was decided)."""


def render(response: Response, keep: bool) -> bytes:
    """``response`` as the bytes uvicorn would send for it."""
    status = response.status_code
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n".encode("latin-1")]
    head.append(f"server: {SERVER_HEADER}\r\ndate: {formatdate(time.time(), usegmt=True)}\r\n".encode())
    for k, v in response.raw_headers:
        head.append(k + b": " + v + b"\r\n")
    if not keep:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + bytes(response.body)


class HandoffHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, which first offers each new connection's first request to the
    gateway hand-off (see the module)."""

    handoff: GatewayHandoff | None = None

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._fresh = True
        self._resume: tuple[bytes, bool, bytes] | None = None
        """A given-back connection: the daemon's answer to write first, keep-alive, the bytes not served."""
        if self.handoff is not None:
            self.handoff.remember(config, server_state, app_state)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        resume, self._resume = self._resume, None
        if resume is None:
            return
        answer, keep, rest = resume
        if answer:
            transport.write(answer)
        if not keep:
            transport.close()
        elif rest:
            super().data_received(rest)

    def data_received(self, data: bytes) -> None:
        if self._fresh:
            self._fresh = False
            handoff = self.handoff
            if handoff is not None and handoff.offer(self, data):
                return
        super().data_received(data)


def protocol_for(handoff: GatewayHandoff) -> type[HandoffHttpProtocol]:
    """The uvicorn ``http`` protocol class for a daemon with ``handoff``."""
    return type("HandoffHttpProtocol", (HandoffHttpProtocol,), {"handoff": handoff})


def _resumed_protocol(
    handoff: GatewayHandoff,
    config: Any,
    server_state: Any,
    app_state: Any,
    answer: bytes,
    keep: bool,
    rest: bytes,
) -> HandoffHttpProtocol:
    proto = handoff.protocol_class(config, server_state, app_state)
    proto._fresh = False  # a connection given back stays here
    proto._resume = (answer, keep, rest)
    return proto
