"""The content store seen as an OCI image layout, so pulled images go through the image store's import."""

from __future__ import annotations

import io
from typing import BinaryIO

from faasd.content import ContentStore
from faasd.content import digest as dg
from faasd.errors import InvalidInputError
from faasd.images import models as m


class ContentLayout:
    """An OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) over content-store blobs.

    ``index.json`` lists the one manifest given, which (like its config and layers) must already be in
    the store. Implements :class:`faasd.images.archive.Source`.
    """

    in_store = True

    def __init__(
        self, content: ContentStore, manifest_digest: str, media_type: str, description: str
    ) -> None:
        self.content = content
        self.description = description
        desc = {"mediaType": media_type, "digest": manifest_digest, "size": content.size(manifest_digest)}
        self._files = {
            "oci-layout": m.canonical_json({"imageLayoutVersion": m.OCI_LAYOUT_VERSION}),
            "index.json": m.canonical_json(
                {"schemaVersion": 2, "mediaType": m.MT_OCI_INDEX, "manifests": [desc]}
            ),
        }

    def _digest(self, name: str) -> str | None:
        prefix = "blobs/sha256/"
        if name.startswith(prefix) and dg.is_hex(name[len(prefix) :]):
            return dg.from_hex(name[len(prefix) :])
        return None

    def exists(self, name: str) -> bool:
        if name in self._files:
            return True
        d = self._digest(name)
        return d is not None and self.content.exists(d)

    def size(self, name: str) -> int:
        if name in self._files:
            return len(self._files[name])
        d = self._digest(name)
        if d is None:
            raise InvalidInputError(f"{self.description}: {name} is missing")
        return self.content.size(d)

    def open(self, name: str) -> BinaryIO:
        if name in self._files:
            return io.BytesIO(self._files[name])
        d = self._digest(name)
        if d is None:
            raise InvalidInputError(f"{self.description}: {name} is missing")
        return self.content.open(d)

    def close(self) -> None:
        pass
