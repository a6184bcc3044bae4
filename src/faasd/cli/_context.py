"""How commands get their API client: one replaceable factory, so tests can inject a mock transport."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import typer

from faasd.sdk import Client


@dataclass
class CliState:
    url: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    namespace: str | None = None


def default_factory(state: CliState) -> Client:
    return Client(state.url, api_key=state.api_key, timeout=state.timeout, namespace=state.namespace)


client_factory: Callable[[CliState], Client] = default_factory
"""Replaced by tests (``monkeypatch.setattr(faasd.cli._context, "client_factory", ...)``)."""


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def client(ctx: typer.Context) -> Client:
    """A new client for this command; close it (``with client(ctx) as c:``)."""
    return client_factory(state(ctx))
