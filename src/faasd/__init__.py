"""faasd: a self-hosted serverless platform with real runc isolation, CRIU snapshots and branching.

The Python SDK is re-exported here: ``faasd.Client`` and ``faasd.AsyncClient``; and two image helpers:
``faasd.extract_docker_image(fileobj, rootfs_dir)`` (flatten a ``docker save`` archive into a directory)
and ``faasd.image_command(config)`` (the argv from ENTRYPOINT/CMD), imported on first use.
"""

from typing import Any

__version__ = "0.1.0"

from faasd.sdk import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__", "extract_docker_image", "image_command"]


def __getattr__(name: str) -> Any:
    if name in ("extract_docker_image", "image_command"):
        from faasd.images import flatten

        return getattr(flatten, name)
    raise AttributeError(f"module 'faasd' has no attribute {name!r}")
