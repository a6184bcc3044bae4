"""How commands get their API client: one replaceable factory, so tests can inject a mock transport.

The SDK (httpx, msgspec) is imported when a command asks for its client, not when ``faas`` starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from faasd.sdk import Client


@dataclass
class CliState:
    url: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    namespace: str | None = None


OPTIONAL_IMPORTS_SKIPPED = ("httpx._main", "trio")
"""Modules faas's libraries import only if they can, which ``faas`` never uses: httpx's own command line
(``import httpx`` loads click, rich and pygments for it) and trio (httpcore's trio support; ``faas`` is
synchronous or asyncio). Together they took longer to import than all the rest of a ``faas`` command."""


def skip_optional_imports() -> None:
    """Mark :data:`OPTIONAL_IMPORTS_SKIPPED` unavailable in this (``faas``) process, unless already loaded:
    the libraries' ``try: import ... except ImportError`` then takes the fallback they ship."""
    for name in OPTIONAL_IMPORTS_SKIPPED:
        if name not in sys.modules and name.split(".")[0] not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def default_factory(state: CliState) -> Client:
    from faasd.sdk.client import Client

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
