"""Deploy/invoke helpers for tests of user functions against a real platform."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Unpack

from faasd.cli._source import build_source_image, server_builds_source
from faasd.config import Settings
from faasd.errors import InvalidInputError
from faasd.sdk import Client, DeployOptions, Function, InvokeResult
from faasd.sdk._api import Body, default_image
from faasd.testing.server import FaasdServer


def unique_name(prefix: str = "t") -> str:
    """A valid, unique function name (``[a-z0-9-]``, at most 63 chars)."""
    return f"{prefix[:40].lower()}-{uuid.uuid4().hex[:10]}"


def deploy_function(
    client: Client,
    name: str | None = None,
    *,
    source: str | Path | None = None,
    image: str | None = None,
    replace: bool = True,
    server: FaasdServer | None = None,
    **options: Unpack[DeployOptions],
) -> Function:
    """Deploy from an image or from a source directory (python: ``handler`` defaults to ``handler.handle``).

    A source directory is uploaded when the daemon supports it; otherwise, for a daemon started by the
    plugin (``server``), the layer is built in that daemon's image store directly.
    """
    name = name or unique_name()
    if source is None:
        return client.deploy(name, image, replace=replace, **options)
    source = Path(source)
    options.setdefault("runtime", "python")
    if server_builds_source(client):
        return client.deploy(name, image, source=source, replace=replace, **options)
    if server is None or server.data_dir is None or server.run_dir is None:
        raise InvalidInputError(
            "this daemon cannot take a source upload; deploy an image instead, or use a "
            "daemon started by the faasd pytest plugin"
        )
    settings = Settings(data_dir=server.data_dir, run_dir=server.run_dir)
    ref = build_source_image(settings, name, source, image or default_image(options.get("runtime")))
    return client.deploy(name, ref, replace=replace, **options)


def invoke(
    client: Client, name: str, data: Body = None, *, check: bool = True, **kwargs: Any
) -> InvokeResult:
    """Invoke synchronously; with ``check`` a failing function raises ``FunctionError`` with its traceback."""
    result = client.invoke(name, data, **kwargs)
    return result.raise_for_status() if check else result
