"""faasd: a self-hosted serverless platform with real runc isolation, CRIU snapshots and branching.

The Python SDK is re-exported here: ``faasd.Client`` and ``faasd.AsyncClient``. They are loaded on first
access, so that the server packages (and ``import faasd.errors``) never import the SDK or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from faasd.sdk import AsyncClient, Client

_LAZY = {"AsyncClient": "faasd.sdk", "Client": "faasd.sdk"}

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'faasd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
