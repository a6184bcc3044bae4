"""Image references as Docker reads them: ``[host[:port]/]path[:tag][@sha256:...]``.

A first path component is a registry host only when it looks like one (has a ``.`` or a ``:``, or
is ``localhost``); otherwise the image is on Docker Hub, where one-component names live under
``library/``: ``alpine`` is ``docker.io/library/alpine:latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faasd.content import digest as dg
from faasd.errors import InvalidInputError
from faasd.images.store import normalize_ref

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
"""The host that serves Docker Hub's registry API (``docker.io`` itself does not)."""

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    registry: str
    """Host (and port) as written, ``docker.io`` for Docker Hub."""
    repository: str
    """Path in the registry, e.g. ``library/alpine``."""
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What the manifest is fetched by: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def store_ref(self) -> str | None:
        """The name the image store keeps it under (Docker's familiar form), None for a digest-only ref."""
        if self.tag is None:
            return None
        return normalize_ref(f"{self.name}:{self.tag}")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def parse(ref: str) -> Reference:
    """Parse ``ref``; raise InvalidInputError saying what is wrong with it."""
    if not isinstance(ref, str) or not ref or len(ref) > 512 or ref != ref.strip():
        raise InvalidInputError(f"invalid image reference {ref!r}: expected e.g. 'alpine:3.19'")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not dg.is_digest(digest):
            raise InvalidInputError(
                f"invalid image reference {ref!r}: the part after '@' must be 'sha256:' and 64 hex characters"
            )
    first, sep, remainder = rest.partition("/")
    if sep and _looks_like_host(first):
        if not _HOST.match(first):
            raise InvalidInputError(
                f"invalid image reference {ref!r}: {first!r} is not a valid registry host"
            )
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidInputError(f"invalid image reference {ref!r}: {tag!r} is not a valid tag")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    parts = path.split("/")
    if not path or not all(_COMPONENT.match(p) for p in parts):
        raise InvalidInputError(
            f"invalid image reference {ref!r}: repository names are lowercase letters, digits and "
            "separators ('.', '_', '-'), e.g. 'library/alpine'"
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, path, tag, digest)
