"""Image references: ``name[:tag]`` validated and normalised the way Docker shows them."""

from __future__ import annotations

import re

from faasd.errors import InvalidInputError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
)
_REF_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?$"
)


def normalize_ref(ref: str) -> str:
    """Validate an image reference (``name[:tag]``) and add ``:latest`` when no tag is given."""
    if not isinstance(ref, str) or len(ref) > 255 or not _REF_RE.match(ref):
        raise InvalidInputError(
            f"invalid image reference {ref!r}: use lowercase 'name[:tag]', e.g. 'python:3.11'"
        )
    last = ref.rsplit("/", 1)[-1]
    ref = ref if ":" in last else f"{ref}:latest"
    # familiar names, like Docker shows them: docker.io/library/python:3 -> python:3
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref
