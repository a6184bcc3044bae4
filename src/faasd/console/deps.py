"""Shared pieces of the console routes: the platform, the console state and the scope dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Depends, Request

from faasd.api.auth import require
from faasd.api.namespacing import require_unbound
from faasd.console.history import MetricsHistory
from faasd.console.operations import Operations
from faasd.console.session import SessionStore
from faasd.platform.core import Platform
from faasd.platform.keys import KeyInfo

CONSOLE = "the console (its views span every namespace)"


def console_require(scope: str) -> Callable[[Request], Awaitable[KeyInfo]]:
    """``require(scope)`` for console routes, which also refuse keys bound to a namespace (403)."""
    check = require(scope)

    async def dependency(request: Request) -> KeyInfo:
        key = await check(request)
        require_unbound(key, CONSOLE)
        return key

    dependency.__name__ = f"console_require_{scope}"
    return dependency


invoke_scope = Depends(console_require("invoke"))
deploy_scope = Depends(console_require("deploy"))
admin_scope = Depends(console_require("admin"))


@dataclass
class ConsoleState:
    sessions: SessionStore
    history: MetricsHistory
    operations: Operations = field(default_factory=Operations)


def platform_of(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def console_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    state.history.ensure_running()
    return state
