"""Source-directory deploys: let the daemon build the layer if it can, else build it in the local store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from faasd.config import Settings
from faasd.errors import InvalidInputError
from faasd.sdk import Client
from faasd.sdk._api import pack_source


def server_builds_source(client: Client) -> bool:
    """Whether the daemon accepts a source upload in the deploy request (``info.source_deploy``)."""
    return client.info().source_deploy


def build_source_image(settings: Settings, name: str, source: Path, base: str) -> str:
    """Add ``source`` as a layer at ``/function`` on ``base`` in the local image store; return the new ref.

    Only works on the daemon's host with write access to its data dir (``FAASD_DATA_DIR``).
    """
    try:
        from faasd.images.store import ImageStore
    except ImportError as exc:
        raise InvalidInputError(
            f"the daemon cannot take a source upload and the local image store is unavailable ({exc}); "
            "build an image and deploy it with --image"
        ) from exc
    digest = hashlib.sha256(pack_source(source)).hexdigest()[:12]
    ref = f"faasd-fn/{name}:{digest}"
    try:
        ImageStore(settings).add_layer(base, source, dest="/function", ref=ref)
    except PermissionError as exc:
        raise InvalidInputError(
            f"cannot write the local image store at {settings.data_dir} ({exc.strerror}); run as the "
            "daemon's user, or set FAASD_DATA_DIR to the daemon's data dir"
        ) from exc
    return ref
