"""Reading a layer's tar stream safely: limits, the bounded and hashed (diff_id) stream fed to ``tarfile``,
and the member-name rules (no ``..``, no NUL, bounded lengths). See :mod:`faasd.images.extract`."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from faasd.errors import InvalidInputError
from faasd.images import compression

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds applied to every layer; defaults suit real images (a few GiB, ~10^5 files)."""

    max_bytes: int = 8 * 1024**3
    """Total uncompressed bytes per layer (tar stream and sum of member sizes, sparse expanded)."""
    max_entries: int = 500_000
    max_ratio: float = 200.0
    """Uncompressed/compressed ratio allowed once ``ratio_grace_bytes`` were produced."""
    ratio_grace_bytes: int = 128 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024
    """Largest single PAX / GNU long-name header block."""
    max_path_bytes: int = 4096
    max_name_bytes: int = 255
    devices: Literal["reject", "skip"] = "reject"


@dataclass
class UnpackReport:
    diff_id: str = ""
    entries: int = 0
    bytes: int = 0
    """Sum of regular file sizes written."""
    compression: str = "none"
    compressed_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(entry name, reason) for entries deliberately not extracted."""
    duplicates: int = 0


def _bad(name: str, reason: str) -> InvalidInputError:
    return InvalidInputError(f"refusing layer entry {name!r}: {reason}", entry=name, reason=reason)


class _TarStream:
    """Forward-only file object fed to ``tarfile.TarFile``: hashes (diff_id) and bounds everything read."""

    def __init__(
        self, src: BinaryIO, limits: ExtractLimits, compressed: Callable[[], int], what: str
    ) -> None:
        self._src = src
        self._limits = limits
        self._compressed = compressed
        self._what = what
        self._hash = hashlib.sha256()
        self.pos = 0
        self.eof = False
        self.name = None  # tarfile looks for .name

    def _account(self, data: bytes) -> None:
        self._hash.update(data)
        self.pos += len(data)
        lim = self._limits
        if self.pos > lim.max_bytes:
            raise InvalidInputError(
                f"{self._what}: more than {lim.max_bytes} uncompressed bytes (size bomb?)", reason="size"
            )
        if self.pos > lim.ratio_grace_bytes:
            comp = max(self._compressed(), 1)
            if self.pos / comp > lim.max_ratio:
                raise InvalidInputError(
                    f"{self._what}: compression ratio above {lim.max_ratio:g}:1 (decompression bomb?)",
                    reason="ratio",
                )

    def _raw_read(self, n: int) -> bytes:
        try:
            data = self._src.read(n)
            if n and not data:
                self.eof = True
            return data
        except compression.DECOMPRESSION_ERRORS as exc:
            raise compression.decompression_error(exc, self._what) from None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > max(self._limits.max_header_bytes, _CHUNK):
            raise InvalidInputError(
                f"{self._what}: tar header or read of {n} bytes exceeds the "
                f"{self._limits.max_header_bytes}-byte header limit",
                reason="header",
            )
        out = bytearray()
        while len(out) < n:
            data = self._raw_read(n - len(out))
            if not data:
                break
            out += data
        self._account(bytes(out))
        return bytes(out)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.pos
        elif whence != 0:
            raise OSError(errno.ESPIPE, "layer streams are not seekable from the end")
        if offset < self.pos:
            raise InvalidInputError(f"{self._what}: tar needs a backward seek (malformed archive)")
        while self.pos < offset:
            chunk = self._raw_read(min(_CHUNK, offset - self.pos))
            if not chunk:
                break
            self._account(chunk)
        return self.pos

    def drain(self) -> None:
        while True:
            chunk = self._raw_read(_CHUNK)
            if not chunk:
                return
            self._account(chunk)

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def normalize_name(name: str, limits: ExtractLimits) -> tuple[str, ...]:
    """Split a tar member name into safe components; raise on ``..``, NUL, or over-long names."""
    if "\x00" in name:
        raise _bad(name, "name contains a NUL byte")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > limits.max_path_bytes:
        raise _bad(name[:80] + "...", f"name longer than {limits.max_path_bytes} bytes")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise _bad(name, "'..' path component (path traversal)")
        if len(comp.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
            raise _bad(name[:80] + "...", f"a path component is longer than {limits.max_name_bytes} bytes")
        parts.append(comp)
    return tuple(parts)
