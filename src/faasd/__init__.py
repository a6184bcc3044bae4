"""faasd: a self-hosted serverless platform with real runc isolation, CRIU snapshots and branching.

The Python SDK is re-exported here: ``faasd.Client`` and ``faasd.AsyncClient``; and two image helpers:
``faasd.extract_docker_image(fileobj, rootfs_dir)`` (flatten a ``docker save`` archive into a directory)
and ``faasd.image_command(config)`` (the argv from ENTRYPOINT/CMD). All are loaded on first access, so that
the server packages (and ``import faasd.errors``) never import the SDK or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faasd._version import __version__

if TYPE_CHECKING:
    from faasd.sdk import AsyncClient, Client

_LAZY = {
    "AsyncClient": "faasd.sdk",
    "Client": "faasd.sdk",
    "extract_docker_image": "faasd.images.flatten",
    "image_command": "faasd.images.flatten",
}

__all__ = ["AsyncClient", "Client", "__version__", "extract_docker_image", "image_command"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'faasd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
