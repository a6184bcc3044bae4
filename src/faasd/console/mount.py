"""Mount the console on the API app: ``/ui`` (page and static assets) and ``/ui/api`` (console JSON,
SSE and the terminal WebSocket). The console calls the daemon's own ``/api/v1`` for everything else,
authenticated by its session cookie (see :mod:`faasd.console.session` and ``faasd.api.auth``)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from faasd.console import (
    routes_images,
    routes_invoke,
    routes_live,
    routes_session,
    routes_system,
    routes_terminal,
)
from faasd.console.deps import ConsoleState
from faasd.console.history import MetricsHistory
from faasd.console.session import SessionStore
from faasd.platform.core import Platform


class _Static(StaticFiles):
    """Static assets with the headers the console page needs (no sniffing; revalidate on change)."""

    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        resp = await super().get_response(path, scope)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-cache"
        return resp


def install_console(app: FastAPI, platform: Platform) -> None:
    state = ConsoleState(SessionStore(), MetricsHistory(platform.metrics))
    app.state.console = state
    app.state.console_sessions = state.sessions  # read by faasd.api.auth (cookie sessions)
    for r in (
        routes_session.router,
        routes_live.router,
        routes_images.router,
        routes_invoke.router,
        routes_system.router,
        routes_terminal.router,
    ):
        # the console's own JSON/SSE/WebSocket routes serve the UI (cookie sessions, same origin): they are
        # not part of the public API contract in /openapi.json (docs/API.md, "Console UI", lists them)
        app.include_router(r, include_in_schema=False)
    app.mount("/ui/static", _Static(directory=routes_session.STATIC), name="console-static")
