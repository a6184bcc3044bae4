"""Layer compression: detect gzip / zstd / uncompressed by magic bytes and open a streaming reader."""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO, cast

import zstandard

from faasd.errors import InvalidInputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    gzip.BadGzipFile,
    zlib.error,
    zstandard.ZstdError,
)


class CountingReader(io.RawIOBase):
    """Counts the bytes read from an underlying (compressed) stream, for the ratio guard."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


def detect(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def detect_stream(f: BinaryIO) -> str:
    """Peek at a seekable stream's first bytes without moving it."""
    pos = f.tell()
    head = f.read(4)
    f.seek(pos)
    return detect(head)


def open_decompressed(raw: BinaryIO) -> tuple[BinaryIO, CountingReader, str]:
    """Return ``(uncompressed reader, compressed-byte counter, compression name)`` for a seekable stream."""
    kind = detect_stream(raw)
    counter = CountingReader(raw)
    reader: BinaryIO
    if kind == "gzip":
        reader = cast(BinaryIO, gzip.GzipFile(fileobj=counter, mode="rb"))
    elif kind == "zstd":
        reader = cast(
            BinaryIO,
            zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(
                cast(BinaryIO, counter), read_across_frames=True, closefd=False
            ),
        )
    else:
        reader = cast(BinaryIO, counter)
    return reader, counter, kind


def decompression_error(exc: BaseException, what: str) -> InvalidInputError:
    return InvalidInputError(f"{what}: compressed data is corrupt or truncated ({type(exc).__name__}: {exc})")
