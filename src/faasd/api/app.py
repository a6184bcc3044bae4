"""FastAPI application factory."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faasd._version import __version__
from faasd.api import routes_blueprint, routes_openfaas, routes_seed, routes_stream, routes_v1
from faasd.api.accesslog import AccessLog
from faasd.api.auth import require
from faasd.api.errors import install_error_handlers
from faasd.api.fastpath import InvokeFastPath, RequestCounter
from faasd.api.handoff import GatewayHandoff
from faasd.api.namespacing import require_unbound
from faasd.api.openapi_docs import PROMETHEUS, complete_document
from faasd.api.routes_images import router as images_router
from faasd.api.routes_instances import router as instances_router
from faasd.api.routes_jobs import router as jobs_router
from faasd.api.routes_namespaces import router as namespaces_router
from faasd.api.routes_snapshots import router as snapshots_router
from faasd.config import Settings
from faasd.console.mount import install_console
from faasd.platform.core import Platform
from faasd.platform.keys import KeyInfo

access_log = logging.getLogger("faasd.access")


class PayloadLimitMiddleware:
    """413 JSON before the app runs when the declared (or, for chunked bodies, actual) size is too big."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._reject(send, int(declared))
                return
            await self.app(scope, receive, send)
            return
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            await self.app(scope, receive, send)
            return
        # Chunked: buffer up to the limit, then replay.
        chunks: list[bytes] = []
        total = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            data = msg.get("body", b"")
            total += len(data)
            if total > self.limit:
                await self._reject(send, total)
                return
            chunks.append(data)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps(
            {
                "error": "payload_too_large",
                "message": f"request body of {size}+ bytes exceeds the limit of {self.limit} bytes "
                "(FAASD_MAX_PAYLOAD_BYTES)",
                "details": {"limit": self.limit},
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, platform: Platform, access: AccessLog) -> None:
        self.app = app
        self.platform = platform
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.platform.metrics.http_requests.labels(method, path, str(status)).inc()
            state = scope.get("state") or {}
            key = state.get("key") if isinstance(state, dict) else None
            self.access.record(
                time.time(),
                method,
                scope.get("path", ""),
                path,
                status,
                (time.perf_counter() - started) * 1000,
                getattr(key, "id", None),
            )


def create_app(
    settings: Settings,
    platform: Platform | None = None,
    *,
    manage_platform: bool = True,
    **platform_kwargs: Any,
) -> FastAPI:
    """Build the app. ``platform`` defaults to one built from ``settings`` (``platform_kwargs`` are passed
    to :class:`Platform`; ``worker_factory`` is required then). With ``manage_platform`` the app's lifespan
    starts the platform (reconcile, async loop, pre-warm) and closes it (pools, sandboxes) on shutdown."""
    if platform is None:
        platform = Platform(settings, **platform_kwargs)
    plat = platform
    access = AccessLog(access_log)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_platform and not plat.started:
            await plat.start()
        try:
            yield
        finally:
            handoff: GatewayHandoff = _app.state.handoff
            handoff.closing = True
            access.flush()
            if manage_platform:
                await plat.close()
            handoff.close()

    app = FastAPI(title="faasd", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.platform = plat
    app.state.settings = settings
    app.state.access_log = access
    app.state.count_error = lambda code: plat.metrics.errors.labels(code).inc()
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, platform=plat, access=access)
    app.add_middleware(PayloadLimitMiddleware, limit=settings.max_payload_bytes)
    build_stack = app.build_middleware_stack

    requests = RequestCounter(plat.metrics.http_requests)
    app.state.handoff = GatewayHandoff(plat, access, requests)

    def build_with_fast_path() -> ASGIApp:
        # outside even Starlette's/FastAPI's own outer middleware: sync invokes skip the whole stack
        return InvokeFastPath(build_stack(), plat, access, requests)

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]

    @app.get("/healthz")
    async def healthz() -> Response:
        try:
            plat.db.ping()
        except Exception as exc:
            return Response(
                json.dumps({"error": "unavailable", "message": f"database unreachable: {exc}"}),
                status_code=503,
                media_type="application/json",
            )
        return Response(json.dumps({"status": "ok", "version": __version__}), media_type="application/json")

    @app.get("/metrics", response_class=Response, responses={200: PROMETHEUS})
    async def metrics(_request: Request, key: KeyInfo = Depends(require("invoke"))) -> Response:
        require_unbound(key, "/metrics (its labels name the functions of every namespace)")
        for name, pool in list(plat.runner.pools.items()):
            st = pool.stats()
            plat.metrics.pool_workers.labels(name, "busy").set(st.busy)
            plat.metrics.pool_workers.labels(name, "idle").set(st.idle)
        return Response(generate_latest(plat.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(routes_v1.router)
    app.include_router(routes_seed.router)
    app.include_router(routes_blueprint.router)
    app.include_router(routes_stream.router)
    app.include_router(snapshots_router)
    app.include_router(instances_router)
    app.include_router(images_router)
    app.include_router(jobs_router)
    app.include_router(namespaces_router)
    app.include_router(routes_openfaas.router)
    install_console(app, plat)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = complete_document(doc)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
