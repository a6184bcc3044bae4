"""A containerd-like content store: immutable blobs addressed by their sha256 digest.

Layout under ``root`` (``settings.content_dir``)::

    blobs/sha256/<hex>      committed blobs, read-only (0444)
    ingest/<random>         blobs being written; same filesystem, so commit is an atomic rename
    ingest/<hex>.partial    a download of blob <hex> that was cut off; the next writer continues it

A blob is only ever visible under its final name once its bytes were hashed, verified against the
expected digest/size (when the caller knows them) and fsynced. Any failure, including ENOSPC,
removes the ingest file, so the store never holds a half-written or unverified blob.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from faasd.content import digest as dg
from faasd.errors import ConflictError, InvalidInputError, NotFoundError, StorageFullError
from faasd.filelock import flock

CHUNK = 1024 * 1024
BytesCallback = Callable[[int], None]


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    created: bool
    """True when this call added the blob, False when it was already in the store."""


def raise_storage(exc: OSError, what: str) -> NoReturn:
    """Re-raise ``exc``, as StorageFullError when the disk (or quota) is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StorageFullError(
            f"no space left while writing {what}; free space in the data directory and retry"
        ) from exc
    raise exc


class BlobWriter:
    """Streams bytes into an ingest file, hashing as it goes; ``commit`` verifies and publishes.

    Use as a context manager: leaving the block without ``commit`` (or with an exception) aborts
    and removes the ingest file.
    """

    def __init__(self, store: ContentStore, progress: BytesCallback | None = None) -> None:
        self._store = store
        self._progress = progress
        self._hash = hashlib.sha256()
        self.size = 0
        store.ingest_dir.mkdir(parents=True, exist_ok=True)
        self._path = store.ingest_dir / f"{secrets.token_hex(16)}.part"
        try:
            self._fd: int | None = os.open(
                self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise_storage(exc, "a blob")
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._fd is None:
            raise ValueError("blob writer is closed")
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            self.abort()
            raise_storage(exc, "a blob")
        self._hash.update(data)
        self.size += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return len(data)

    @property
    def digest(self) -> str:
        return f"{dg.ALGORITHM}:{self._hash.hexdigest()}"

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> BlobInfo:
        """Verify against the expectations, fsync and atomically move the blob into place."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        actual = self.digest
        try:
            if expected_size is not None and expected_size != self.size:
                raise InvalidInputError(
                    f"blob {expected_digest or actual} has {self.size} bytes, expected {expected_size}: "
                    "the archive is truncated or corrupt",
                    digest=expected_digest or actual,
                )
            if expected_digest is not None and dg.validate(expected_digest) != actual:
                raise InvalidInputError(
                    f"digest mismatch: content hashes to {actual}, expected {expected_digest}: "
                    "the archive is corrupt or was tampered with",
                    expected=expected_digest,
                    actual=actual,
                )
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise_storage(exc, "a blob")
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = None
        final = self._store._blob_path(actual)
        if final.exists():
            self._path.unlink(missing_ok=True)
            self._done = True
            return BlobInfo(actual, self.size, created=False)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self._path, 0o444)
            os.rename(self._path, final)
        except OSError as exc:
            self._path.unlink(missing_ok=True)
            raise_storage(exc, "a blob")
        self._done = True
        return BlobInfo(actual, self.size, created=True)

    def flush(self) -> None:
        """No-op (data goes straight to the ingest file); lets this object back a GzipFile."""

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if not self._done:
            self._path.unlink(missing_ok=True)
            self._done = True

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class ResumableWriter(BlobWriter):
    """A BlobWriter for a blob whose digest is known, that survives interruptions.

    Its ingest file is named by the digest (``ingest/<hex>.partial``): a writer opened again for the
    same digest continues after the bytes already there (``size``; e.g. an HTTP Range download).
    ``suspend`` closes it keeping those bytes; ``abort``/``commit`` behave as in BlobWriter (a digest
    mismatch removes the file). An exclusive flock keeps two writers off the same partial blob.
    """

    def __init__(self, store: ContentStore, digest: str, progress: BytesCallback | None = None) -> None:
        self._store = store
        self._progress = progress
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False
        self._fd = None
        store.ingest_dir.mkdir(parents=True, exist_ok=True)
        self._path = store.ingest_dir / f"{dg.hex_of(digest)}.partial"
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise_storage(exc, "a blob")
        if not flock(fd, blocking=False):
            os.close(fd)
            self._done = True
            raise ConflictError(
                f"blob {digest} is being downloaded by another pull; retry when it is done"
            )
        self._fd = fd
        with open(self._path, "rb") as f:  # hash what an earlier, interrupted writer left
            while chunk := f.read(CHUNK):
                self._hash.update(chunk)
                self.size += len(chunk)

    def reset(self) -> None:
        """Drop the bytes written so far (the source cannot continue where they end)."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        os.ftruncate(self._fd, 0)
        self._hash = hashlib.sha256()
        self.size = 0

    def suspend(self) -> None:
        """Close, keeping the bytes written so far for the next writer of this digest."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self._done = True


class ContentStore:
    """Blobs by digest under ``root/blobs/sha256/<hex>``; see module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / dg.ALGORITHM
        self.ingest_dir = self.root / "ingest"

    @classmethod
    def from_settings(cls, settings: object) -> ContentStore:
        return cls(settings.content_dir)  # type: ignore[attr-defined]

    def _blob_path(self, digest: str) -> Path:
        return self.blobs_dir / dg.hex_of(digest)

    # --- reading ---------------------------------------------------------------------------
    def exists(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def path(self, digest: str) -> Path:
        """Path of a committed blob (read-only). Raises NotFoundError if absent."""
        p = self._blob_path(digest)
        if not p.is_file():
            raise NotFoundError(f"blob {digest} is not in the content store")
        return p

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self._blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the content store") from None

    def read_bytes(self, digest: str, max_size: int | None = None) -> bytes:
        size = self.size(digest)
        if max_size is not None and size > max_size:
            raise InvalidInputError(f"blob {digest} is {size} bytes, more than the {max_size} allowed here")
        with self.open(digest) as f:
            return f.read()

    def size(self, digest: str) -> int:
        try:
            return self._blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the content store") from None

    def list(self) -> list[str]:
        if not self.blobs_dir.is_dir():
            return []
        return sorted(dg.from_hex(p.name) for p in self.blobs_dir.iterdir() if dg.is_hex(p.name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    # --- writing ---------------------------------------------------------------------------
    def writer(self, progress: BytesCallback | None = None) -> BlobWriter:
        return BlobWriter(self, progress)

    def resumable_writer(self, digest: str, progress: BytesCallback | None = None) -> ResumableWriter:
        """A writer for ``digest`` that continues a partial blob an interrupted writer suspended."""
        return ResumableWriter(self, digest, progress)

    def ingest(
        self,
        stream: BinaryIO,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        progress: BytesCallback | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        """Copy ``stream`` into the store, verifying digest/size; return the committed blob.

        If the expected digest is already present the stream is still read and verified (so a
        caller can trust the source was intact) but no second copy is written.
        """
        if expected_digest is not None:
            dg.validate(expected_digest)
        limit = max_size if max_size is not None else expected_size
        with self.writer(progress) as w:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
                if limit is not None and w.size > limit:
                    why = "announced" if expected_size is not None else "allowed (size limit)"
                    raise InvalidInputError(
                        f"blob {expected_digest or '(unknown)'} is larger than the {limit} bytes {why}"
                    )
            return w.commit(expected_digest, expected_size)

    def write_bytes(self, data: bytes, expected_digest: str | None = None) -> BlobInfo:
        with self.writer() as w:
            w.write(data)
            return w.commit(expected_digest, len(data))

    # --- deleting --------------------------------------------------------------------------
    def delete(self, digest: str) -> bool:
        """Remove a blob; returns False if it was not there."""
        try:
            self._blob_path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def clean_ingest(self, older_than_s: float = 0.0) -> int:
        """Remove leftover ingest files (from crashed writers) older than ``older_than_s`` seconds."""
        if not self.ingest_dir.is_dir():
            return 0
        removed = 0
        now = time.time()
        for p in self.ingest_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if now - p.lstat().st_mtime >= older_than_s:
                    p.unlink()
                    removed += 1
        return removed
