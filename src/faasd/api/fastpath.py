"""The invoke fast path: synchronous invocations as a pure ASGI layer in front of the FastAPI app.

``POST /api/v1/functions/{name}/invoke`` and ``/function/{name}[/{path}]`` are most of a busy daemon's
requests, and FastAPI's routing, dependency injection and ``Request`` objects cost more than the
invocation's own bookkeeping. :class:`InvokeFastPath` (wrapped around the whole middleware stack, outside
even Starlette's ``ServerErrorMiddleware``, so it renders its own 500s) answers these requests itself with
the same semantics as the routes, and hands everything else, and every case it does not handle exactly
like them, to the app untouched (nothing of the request is consumed before it decides):

* auth: ``/function/*`` is open unless ``FAASD_FUNCTION_AUTH``; ``/api/v1/.../invoke`` needs a key
  with the ``invoke`` scope when auth is on (``ApiKeyService.verify``, which caches verified keys);
  the per-key rate limit is checked. Requests carrying a console cookie but no ``Authorization`` header
  go to the app (CSRF checks live there);
* declared bodies over ``FAASD_MAX_PAYLOAD_BYTES``, chunked bodies, a root path, a query string on
  ``/api/v1/.../invoke`` (``?async=``, ``callback_url``, ``?namespace=``) and other methods go to the app;
* the function's id (its namespace) is resolved by the routes' own helpers;
* errors become the same JSON as the app's handlers (and count in ``faasd_errors_total``);
* ``faasd_http_requests_total`` is counted with the route templates the app would match, and the
  access log (:class:`faasd.api.accesslog.AccessLog`, batched) gets the same line as
  :class:`faasd.api.app.MetricsMiddleware` writes.

Execution records and invocation metrics are the execution service's (unchanged).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from faasd.api.accesslog import AccessLog
from faasd.api.auth import ANONYMOUS, token_from_header
from faasd.api.errors import error_response, faasd_error_response, http_status
from faasd.api.invoke import function_response
from faasd.api.namespacing import target_namespace
from faasd.api.routes_openfaas import address_function_id
from faasd.config import Settings
from faasd.errors import FaasdError
from faasd.platform.core import Platform
from faasd.platform.invocation import Invocation
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import function_id

log = logging.getLogger("faasd.api")

FUNCTION_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
"""The methods of the ``/function/*`` routes (``routes_openfaas._METHODS``)."""
ROUTE_FUNCTION = "/function/{name}"
ROUTE_FUNCTION_PATH = "/function/{name}/{path:path}"
ROUTE_INVOKE = "/api/v1/functions/{name}/invoke"
_API_PREFIX = "/api/v1/functions/"
_INVOKE_SUFFIX = "/invoke"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    name: str
    path: str
    """The path the function sees (``/`` for the route's root)."""
    route: str
    """The route template the app would match (the ``route`` label of ``faasd_http_requests_total``)."""
    openfaas: bool


def match(method: str, path: str, query: bytes) -> RouteMatch | None:
    """The fast-path route of a request, or None (the app serves it). ``name`` is the route's ``{name}``
    (for ``/function/*`` an OpenFaaS address, ``<name>`` or ``<name>.<namespace>``)."""
    if path.startswith("/function/"):
        if method not in FUNCTION_METHODS:
            return None
        name, slash, rest = path[10:].partition("/")
        if not name:
            return None
        if slash:
            return RouteMatch(name, "/" + rest, ROUTE_FUNCTION_PATH, True)
        return RouteMatch(name, "/", ROUTE_FUNCTION, True)
    if method == "POST" and path.startswith(_API_PREFIX) and path.endswith(_INVOKE_SUFFIX) and not query:
        name = path[len(_API_PREFIX) : -len(_INVOKE_SUFFIX)]
        if name and "/" not in name:
            return RouteMatch(name, "/", ROUTE_INVOKE, False)
    return None


class _Fallback(Exception):
    """The request is the app's to serve (raised before anything of it was consumed)."""


class RequestCounter:
    """``faasd_http_requests_total`` with its label children cached (``labels()`` is most of a counter's
    cost on the hot path). One per app: the fast path and the gateway hand-off count through it."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._children: dict[tuple[str, str, int], Any] = {}

    def count(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._counter.labels(method, route, str(status))
        child.inc()


class InvokeFastPath:
    def __init__(
        self, app: ASGIApp, platform: Platform, access: AccessLog, requests: RequestCounter | None = None
    ) -> None:
        self.app = app
        self.platform = platform
        self.access = access
        self.limit = platform.settings.max_payload_bytes
        self.requests = requests or RequestCounter(platform.metrics.http_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        m = match(scope["method"], scope["path"], scope["query_string"])
        if m is None:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            if name not in headers:
                headers[name] = v.decode("latin-1")
        declared = headers.get("content-length")
        if declared is None:
            if "transfer-encoding" in headers:
                await self.app(scope, receive, send)  # chunked: the app buffers it under the limit
                return
        elif not declared.isdigit() or int(declared) > self.limit:
            await self.app(scope, receive, send)  # the app answers 413 / a framing error
            return
        try:
            key = self._caller(m, headers)
        except _Fallback:
            await self.app(scope, receive, send)
            return
        except FaasdError as exc:
            await self._respond(scope, receive, send, m, self._error(exc), None, time.perf_counter())
            return
        except Exception as exc:
            response = self._internal_error(scope, exc)
            await self._respond(scope, receive, send, m, response, None, time.perf_counter())
            return
        await self._invoke(scope, receive, send, m, headers, key)

    def _caller(self, m: RouteMatch, headers: dict[str, str]) -> KeyInfo | None:
        settings = self.platform.settings
        if m.openfaas and not settings.function_auth:
            return None  # the Authorization header, if any, is the function's to check
        if not settings.auth:
            return ANONYMOUS
        token = token_from_header(headers.get("authorization"))
        if token is None:
            raise _Fallback  # a console session cookie, or the app's "authentication required"
        return invoking_key(self.platform, token)

    async def _invoke(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        m: RouteMatch,
        headers: dict[str, str],
        key: KeyInfo | None,
    ) -> None:
        started = time.perf_counter()
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            data = msg.get("body", b"")
            if data:
                size += len(data)
                chunks.append(data)
            if not msg.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        inv = Invocation(
            body=body,
            headers=headers,
            path=m.path,
            method=scope["method"],
            query=scope["query_string"].decode("latin-1"),
        )
        try:
            fid = self._function_id(scope, m, key)
            outcome = await self.platform.executions.invoke(fid, inv)
            extra = {"X-Call-Id": outcome.execution_id} if m.openfaas else None
            response: Response = function_response(outcome, extra)
        except FaasdError as exc:
            response = self._error(exc)
        except Exception as exc:
            response = self._internal_error(scope, exc)
        await self._respond(scope, receive, send, m, response, key, started)

    @staticmethod
    def _function_id(scope: Scope, m: RouteMatch, key: KeyInfo | None) -> str:
        """The function's id, resolved as the routes do (namespaces: ``faasd.api.namespacing``)."""
        if m.openfaas:
            return address_function_id(m.name, key)
        assert key is not None
        return function_id(m.name, target_namespace(Request(scope), key))

    def _error(self, exc: FaasdError) -> Response:
        return error_answer(self.platform, exc)

    def _internal_error(self, scope: Scope, exc: Exception) -> Response:
        return internal_error_answer(self.platform, scope["method"], scope["path"], exc)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        m: RouteMatch,
        response: Response,
        key: KeyInfo | None,
        started: float,
    ) -> None:
        status = response.status_code
        try:
            await response(scope, receive, send)
        finally:
            method: str = scope["method"]
            self.requests.count(method, m.route, status)
            self.access.record(
                time.time(),
                method,
                scope["path"],
                m.route,
                status,
                (time.perf_counter() - started) * 1000,
                key.id if key is not None else None,
            )


def route_needs_key(settings: Settings, openfaas: bool) -> bool:
    """Whether an invocation route takes an API key: the API route while auth is on, ``/function/*`` only
    with ``FAASD_FUNCTION_AUTH`` too (otherwise its ``Authorization`` header is the function's)."""
    return settings.auth and (not openfaas or settings.function_auth)


def invoking_key(platform: Platform, token: str, *, check_rate: bool = True) -> KeyInfo:
    """The key of ``token``: valid, within its rate limit (unless ``check_rate`` is False: the gateway
    relay checks that per request) and allowed to invoke; else the :class:`FaasdError` the app answers."""
    key = platform.keys.verify(token)
    if check_rate:
        platform.rate_limiter.check(key)
    key.require("invoke")
    return key


def error_answer(platform: Platform, exc: FaasdError) -> Response:
    """The JSON answer to ``exc`` as the app's handlers write it (and counted in ``faasd_errors_total``)."""
    platform.metrics.errors.labels(exc.code).inc()
    if http_status(exc) >= 500:
        log.error("request failed: %s: %s", exc.code, exc.message)
    return faasd_error_response(exc)


def internal_error_answer(platform: Platform, method: str, path: str, exc: Exception) -> Response:
    """A 500 naming an error id the daemon log has the details of."""
    error_id = "err_" + secrets.token_hex(8)
    platform.metrics.errors.labels("internal_error").inc()
    log.error("unhandled error %s on %s %s", error_id, method, path, exc_info=exc)
    return error_response(
        500,
        "internal_error",
        f"internal error {error_id}; the daemon log has the details",
        {"error_id": error_id},
    )
