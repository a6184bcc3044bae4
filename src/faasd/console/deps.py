"""Shared pieces of the console routes: the platform, the console state and the scope dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Depends, Request

from faasd.api.auth import require
from faasd.console.history import MetricsHistory
from faasd.console.operations import Operations
from faasd.console.session import SessionStore
from faasd.platform.core import Platform

invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))
admin_scope = Depends(require("admin"))


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
