"""Unpacked layers (``layers/<chain-id>/rootfs``, shared read-only, unpacked once under a lock) and the
import transaction that rolls back the blobs and layers it created."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import secrets
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from faasd.content import digest as dg
from faasd.content.store import raise_storage
from faasd.errors import FaasdError, InvalidInputError
from faasd.filelock import flock, locked_file, open_lock_file
from faasd.images import compression
from faasd.images.extract import unpack_layer
from faasd.images.index import ImageIndex
from faasd.images.models import Image, Layer
from faasd.images.storefs import _rmtree
from faasd.images.txn import _Progress, _Txn

_SOURCE_ERRORS: tuple[type[BaseException], ...] = (*compression.DECOMPRESSION_ERRORS, tarfile.TarError)


class LayerUnpacker(ImageIndex):
    """Layers of the store and the transactions that create them."""

    # ================================================================ layers
    def _layer_dir(self, chain_id: str) -> Path:
        return self.layers_dir / dg.hex_of(chain_id)

    def layer_dirs(self, image: Image | str) -> builtins.list[Path]:
        """Unpacked rootfs dirs of an image, lowest first (re-unpacked from the blob if one went missing)."""
        img = self.get(image) if isinstance(image, str) else image
        out = []
        for i, layer in enumerate(img.layers):
            d = self._layer_dir(layer.chain_id)
            if not (d / ".complete").is_file():
                self._ensure_layer(layer, _Txn(), _Progress(None, 1, None), f"layer {i}")
            out.append(d / "rootfs")
        return out

    def _ensure_layer(self, layer: Layer, txn: _Txn, progress: _Progress, what: str) -> None:
        final = self._layer_dir(layer.chain_id)
        if (final / ".complete").is_file():
            return
        hexid = dg.hex_of(layer.chain_id)
        with locked_file(self.layers_dir / ".locks" / f"{hexid}.lock"):
            if (final / ".complete").is_file():
                return
            if final.exists():
                _rmtree(final)  # left over by a crash before the marker was written
            tmp = self.layers_dir / f".tmp-{hexid}-{secrets.token_hex(4)}"
            try:
                tmp.mkdir(parents=True)
                (tmp / "rootfs").mkdir(mode=0o755)
                with self.content.open(layer.digest) as blob:
                    report = unpack_layer(blob, tmp / "rootfs", "overlay", self.limits, what, progress.add)
                if report.diff_id != layer.diff_id:
                    raise InvalidInputError(
                        f"{what} ({layer.digest}): uncompressed content hashes to {report.diff_id} but the "
                        f"image config says {layer.diff_id}: the archive is corrupt or was tampered with"
                    )
                marker = {
                    "chain_id": layer.chain_id,
                    "diff_id": layer.diff_id,
                    "blob": layer.digest,
                    "entries": report.entries,
                    "bytes": report.bytes,
                    "skipped": report.skipped[:100],
                    "unpacked_at": time.time(),
                }
                (tmp / ".complete").write_text(json.dumps(marker))
                os.rename(tmp, final)
            except OSError as exc:
                _rmtree(tmp)
                raise_storage(exc, f"{what} (unpacking)")
            except BaseException:
                _rmtree(tmp)
                raise
            txn.layers.add(layer.chain_id)

    # ================================================================ transactions
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Txn]:
        txn = _Txn()
        self.images_dir.mkdir(parents=True, exist_ok=True)
        fd = open_lock_file(self._gc_lock)
        try:
            flock(fd, shared=True)
            try:
                yield txn
            except BaseException:
                os.close(fd)
                fd = -1
                self._rollback(txn)
                raise
        finally:
            if fd >= 0:
                os.close(fd)

    def _rollback(self, txn: _Txn) -> None:
        if not (txn.blobs or txn.layers):
            return
        fd = open_lock_file(self._gc_lock)
        try:
            if not flock(fd, blocking=False):
                return  # another import is in flight and may share these; gc will collect them
            with locked_file(self._index_lock), contextlib.suppress(FaasdError, OSError):
                # best effort: never mask the import's own error; gc collects whatever is left
                used_blobs, used_chains = self._referenced(self._read_index())
                for d in txn.blobs - used_blobs:
                    self.content.delete(d)
                for c in txn.layers - used_chains:
                    _rmtree(self._layer_dir(c))
        finally:
            os.close(fd)

    def _ingest(
        self,
        txn: _Txn,
        stream: BinaryIO,
        digest: str | None,
        size: int | None,
        progress: _Progress | None = None,
        what: str = "blob",
    ) -> tuple[str, int]:
        try:
            info = self.content.ingest(
                stream,
                digest,
                size,
                progress.add if progress else None,
                max_size=size if size is not None else self.limits.max_bytes,
            )
        except InvalidInputError as exc:
            raise InvalidInputError(f"{what}: {exc.message}", **exc.details) from None
        except _SOURCE_ERRORS as exc:
            raise InvalidInputError(f"{what}: archive data is truncated or corrupt ({exc})") from None
        if info.created:
            txn.blobs.add(info.digest)
        return info.digest, info.size

    def _put_bytes(self, txn: _Txn, data: bytes, digest: str | None = None) -> str:
        info = self.content.write_bytes(data, digest)
        if info.created:
            txn.blobs.add(info.digest)
        return info.digest

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Txn]:
        """An import transaction for callers that put blobs in first (a registry pull): record each blob
        they create in ``txn.blobs``; all of it is rolled back if the block fails."""
        with self._transaction() as txn:
            yield txn
