"""Digest strings (``sha256:<64 hex>``): validation and hashing helpers.

Only sha256 is accepted: it is what every OCI/Docker tool writes, and accepting one algorithm keeps
the on-disk layout (``blobs/sha256/<hex>``) free of user-controlled path components.
"""

from __future__ import annotations

import hashlib
import re

from faasd.errors import InvalidInputError

ALGORITHM = "sha256"
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def validate(digest: str) -> str:
    """Return ``digest`` unchanged if it is a well-formed ``sha256:<hex>``, else raise InvalidInputError."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidInputError(
            f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex characters"
        )
    return digest


def is_digest(value: str) -> bool:
    return isinstance(value, str) and _DIGEST_RE.match(value) is not None


def is_hex(value: str) -> bool:
    return isinstance(value, str) and _HEX_RE.match(value) is not None


def hex_of(digest: str) -> str:
    """The 64-character hex part of a validated digest."""
    return validate(digest).split(":", 1)[1]


def from_hex(hexpart: str) -> str:
    if not is_hex(hexpart):
        raise InvalidInputError(f"invalid sha256 hex {hexpart!r}")
    return f"{ALGORITHM}:{hexpart}"


def sha256_bytes(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids.

    ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))``.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        validate(diff_id)
        if not out:
            out.append(diff_id)
        else:
            out.append(sha256_bytes(f"{out[-1]} {diff_id}".encode()))
    return out
