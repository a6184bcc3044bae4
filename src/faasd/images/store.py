"""The image store: import, look up, lease, remove, garbage-collect and write images.

On disk (see docs/ARCHITECTURE.md)::

    content/blobs/sha256/<hex>          manifests, configs, layers (as shipped) - faasd.content
    layers/<chain-id-hex>/rootfs/       a layer unpacked once (overlay whiteouts), shared read-only
    layers/<chain-id-hex>/.complete     written before the dir is renamed into place
    layers/.locks/<chain-id-hex>.lock   flock while unpacking, so concurrent imports unpack once
    images/index.json                   {"images": {id: {...}}, "refs": {ref: manifest digest}}
    images/index.lock                   flock guarding read-modify-write of index.json
    images/gc.lock                      imports/writers hold it shared, gc exclusive

Every import or write is a transaction: blobs and layer dirs it created are removed again if it
fails (unless another import is in flight, in which case the next ``gc`` collects them), and refs
are only written once everything is verified and unpacked.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import fcntl
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from faasd.config import Settings
from faasd.content import ContentStore
from faasd.content import digest as dg
from faasd.content.store import raise_storage
from faasd.errors import ConflictError, FaasdError, InvalidInputError, NotFoundError
from faasd.images import archive as ar
from faasd.images import compression
from faasd.images import models as m
from faasd.images.extract import ExtractLimits, unpack_layer
from faasd.images.layerwriter import write_layer
from faasd.images.models import GcReport, Image, ImageConfig, Layer, ProgressEvent

ProgressCallback = Callable[[ProgressEvent], None]
_SOURCE_ERRORS: tuple[type[BaseException], ...] = (*compression.DECOMPRESSION_ERRORS, tarfile.TarError)
INDEX_VERSION = 1

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


@contextlib.contextmanager
def _flock(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    """Remove a tree even if it contains read-only directories (unpacked layers do)."""

    def onerror(func: Callable[..., Any], p: str, exc: Any) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
        func(p)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)


def _tree_size(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


@dataclass
class _Txn:
    """What one import/write created, so it can be rolled back."""

    blobs: set[str] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)


class _Progress:
    def __init__(self, cb: ProgressCallback | None, total_steps: int, bytes_total: int | None) -> None:
        self.cb = cb
        self.total_steps = total_steps
        self.bytes_total = bytes_total
        self.step = 0
        self.bytes_done = 0
        self.phase = "read"
        self.description = ""

    def start(self, phase: str, description: str) -> None:
        self.step += 1
        self.phase, self.description = phase, description
        self.emit()

    def add(self, n: int) -> None:
        self.bytes_done += n
        self.emit()

    def emit(self) -> None:
        if self.cb is not None:
            self.cb(
                ProgressEvent(
                    self.phase,
                    self.description,
                    min(self.step, self.total_steps),
                    self.total_steps,
                    self.bytes_done,
                    self.bytes_total,
                )
            )


class ImageStore:
    """See module docstring. Safe to use from several processes and threads at once."""

    def __init__(self, settings: Settings, limits: ExtractLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or ExtractLimits()
        self.content = ContentStore(settings.content_dir)
        self.images_dir = settings.images_dir
        self.layers_dir = settings.layers_dir
        self.index_path = self.images_dir / "index.json"
        self._index_lock = self.images_dir / "index.lock"
        self._gc_lock = self.images_dir / "gc.lock"
        self._cache: dict[str, Image] = {}

    # ================================================================ index
    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "images": {}, "refs": {}}
        except json.JSONDecodeError as exc:
            raise FaasdError(
                f"{self.index_path} is corrupt ({exc}); restore it or remove it and re-import"
            ) from exc
        data.setdefault("images", {})
        data.setdefault("refs", {})
        return data

    def _write_index(self, data: dict[str, Any]) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.images_dir / f".index.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(data, indent=1, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.index_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise_storage(exc, "the image index")

    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[dict[str, Any]]:
        """Exclusive read-modify-write of index.json; written back when the block exits cleanly."""
        with _flock(self._index_lock):
            data = self._read_index()
            before = copy.deepcopy(data)
            yield data
            if data != before:
                self._write_index(data)

    # ================================================================ lookup
    def _load(self, image_id: str, record: dict[str, Any], refs: builtins.list[str]) -> Image:
        manifest_digest = record["manifest"]
        cached = self._cache.get(manifest_digest)
        leases = sorted(record.get("leases", {}))
        if cached is None:
            man = m.parse_model(
                m.Manifest, self.content.read_bytes(manifest_digest), f"manifest {manifest_digest}"
            )
            cfg = m.parse_model(
                m.ConfigFile, self.content.read_bytes(man.config.digest), f"config {image_id}"
            )
            chains = dg.chain_ids(cfg.rootfs.diff_ids)
            layers = [
                Layer(d.digest, diff, chain, d.media_type or m.MT_OCI_LAYER, d.size)
                for d, diff, chain in zip(man.layers, cfg.rootfs.diff_ids, chains, strict=True)
            ]
            cached = Image(
                id=man.config.digest,
                manifest_digest=manifest_digest,
                refs=[],
                config=ImageConfig.from_container_config(cfg.config),
                layers=layers,
                size=man.config.size + sum(x.size for x in layers),
                architecture=cfg.architecture,
                os=cfg.os,
                created=cfg.created,
            )
            self._cache[manifest_digest] = cached
        return Image(**{**cached.__dict__, "refs": sorted(refs), "leases": leases})

    @staticmethod
    def _refs_of(data: dict[str, Any], manifest_digest: str) -> builtins.list[str]:
        return [ref for ref, md in data["refs"].items() if md == manifest_digest]

    def _images(self, data: dict[str, Any], include_deleted: bool = False) -> builtins.list[Image]:
        """Images of the index; one whose blobs are missing or corrupt is left out (see ``gc``)."""
        out = []
        for image_id, rec in data["images"].items():
            if rec.get("deleted") and not include_deleted:
                continue
            with contextlib.suppress(FaasdError):
                out.append(self._load(image_id, rec, self._refs_of(data, rec["manifest"])))
        return out

    def _resolve(self, data: dict[str, Any], ref: str) -> tuple[str, str | None]:
        """Return (image id, matched ref or None) for a ref, full id/manifest digest or short id."""
        images = {k: v for k, v in data["images"].items() if not v.get("deleted")}
        with contextlib.suppress(InvalidInputError):
            name = normalize_ref(ref)
            md = data["refs"].get(name)
            if md is not None:
                for image_id, rec in images.items():
                    if rec["manifest"] == md:
                        return image_id, name
        candidate = ref[7:] if ref.startswith("sha256:") else ref
        if re.fullmatch(r"[0-9a-f]{4,64}", candidate):
            hits = {
                image_id
                for image_id, rec in images.items()
                if dg.hex_of(image_id).startswith(candidate)
                or dg.hex_of(rec["manifest"]).startswith(candidate)
            }
            if len(hits) == 1:
                return hits.pop(), None
            if len(hits) > 1:
                raise InvalidInputError(f"image id prefix {ref!r} is ambiguous; give more characters")
        raise NotFoundError(f"image {ref!r} not found; see 'faas image ls' or import it first")

    def get(self, ref: str) -> Image:
        """Look an image up by ref (``name[:tag]``), id (``sha256:<config>``), manifest digest or short id."""
        data = self._read_index()
        image_id, _ = self._resolve(data, ref)
        rec = data["images"][image_id]
        return self._load(image_id, rec, self._refs_of(data, rec["manifest"]))

    def list(self) -> builtins.list[Image]:
        return sorted(self._images(self._read_index()), key=lambda i: (i.refs[:1] or [""], i.id))

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
            return True
        except NotFoundError:
            return False

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
        with _flock(self.layers_dir / ".locks" / f"{hexid}.lock"):
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
        fd = os.open(self._gc_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
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
        fd = os.open(self._gc_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another import is in flight and may share these; gc will collect them
            with _flock(self._index_lock), contextlib.suppress(FaasdError, OSError):
                # best effort: never mask the import's own error; gc collects whatever is left
                used_blobs, used_chains = self._referenced(self._read_index())
                for d in txn.blobs - used_blobs:
                    self.content.delete(d)
                for c in txn.layers - used_chains:
                    _rmtree(self._layer_dir(c))
        finally:
            os.close(fd)

    def _referenced(self, data: dict[str, Any]) -> tuple[set[str], set[str]]:
        blobs: set[str] = set()
        chains: set[str] = set()
        for image_id, rec in data["images"].items():
            blobs.update({image_id, rec["manifest"]})  # even if the image cannot be loaded
        for img in self._images(data, include_deleted=True):
            blobs.update(x.digest for x in img.layers)
            chains.update(x.chain_id for x in img.layers)
        return blobs, chains

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

    def _commit(self, manifest_digest: str, config_digest: str, refs: Sequence[str]) -> None:
        with self._locked_index() as data:
            rec = data["images"].get(config_digest)
            if rec is None or rec.get("deleted"):
                data["images"][config_digest] = {
                    "manifest": manifest_digest,
                    "added_at": time.time(),
                    "leases": (rec or {}).get("leases", {}),
                }
            else:
                manifest_digest = rec["manifest"]  # same image imported again: keep the first manifest
            for ref in refs:
                data["refs"][ref] = manifest_digest

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Txn]:
        """An import transaction for callers that put blobs in first (a registry pull): record each blob
        they create in ``txn.blobs``; all of it is rolled back if the block fails."""
        with self._transaction() as txn:
            yield txn

    def import_source(
        self,
        src: ar.Source,
        txn: _Txn,
        ref: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Image:
        """Import the image of an OCI layout ``src`` inside ``txn`` (see ``transaction``), named ``ref``."""
        refs = [normalize_ref(ref)] if ref else []
        cands = ar.oci_candidates(src)
        cand = self._select(cands, refs)
        prog = _Progress(progress, 2 + 2 * len(cand.layers), self._source_bytes(src, cand))
        contents = ar.ArchiveContents("oci-layout", src, cands)
        image_id, manifest_digest = self._import_candidate(contents, cand, txn, prog)
        self._commit(manifest_digest, image_id, refs)
        prog.phase, prog.description, prog.step = "done", "imported", prog.total_steps
        prog.emit()
        return self.get(image_id)

    # ================================================================ import
    def import_archive(
        self, path: str | Path, ref: str | None = None, progress: ProgressCallback | None = None
    ) -> Image:
        """Import a docker-archive, OCI archive or OCI layout dir; returns the (single) imported image.

        With several images in the archive, the one whose embedded name equals ``ref`` is taken,
        else the first. ``ref`` (if given) replaces the archive's names; otherwise all names the
        archive gives that image are used. Raises InvalidInputError for anything malformed, after
        rolling back everything the import wrote.
        """
        refs = [normalize_ref(ref)] if ref else []
        contents = ar.open_archive(Path(path))
        try:
            cand = self._select(contents.candidates, refs)
            if not refs:
                refs = sorted({normalize_ref(n) for n in cand.names if self._valid_ref(n)})
            bytes_total = self._source_bytes(contents.source, cand)
            prog = _Progress(progress, 2 + 2 * len(cand.layers), 2 * bytes_total)
            with self._transaction() as txn:
                image_id, manifest_digest = self._import_candidate(contents, cand, txn, prog)
                self._commit(manifest_digest, image_id, refs)
            prog.phase, prog.description, prog.step = "done", "imported", prog.total_steps
            prog.emit()
        finally:
            contents.source.close()
        return self.get(image_id)

    @staticmethod
    def _valid_ref(name: str) -> bool:
        try:
            normalize_ref(name)
            return True
        except InvalidInputError:
            return False

    @staticmethod
    def _select(cands: builtins.list[ar.Candidate], refs: builtins.list[str]) -> ar.Candidate:
        for c in cands:
            if refs and any(ImageStore._valid_ref(n) and normalize_ref(n) == refs[0] for n in c.names):
                return c
        return cands[0]

    @staticmethod
    def _source_bytes(src: ar.Source, cand: ar.Candidate) -> int:
        total = 0
        for layer in cand.layers:
            if layer.size is not None:
                total += layer.size
            elif src.exists(layer.name):
                total += src.size(layer.name)
        return total

    def _import_candidate(
        self, contents: ar.ArchiveContents, cand: ar.Candidate, txn: _Txn, prog: _Progress
    ) -> tuple[str, str]:
        src = contents.source
        blobs: builtins.list[tuple[str, int, str]] = []  # (digest, size, compression)
        for i, lr in enumerate(cand.layers):
            what = f"{src.description}: layer {i} ({lr.name})"
            if not src.exists(lr.name):
                raise InvalidInputError(f"{what} is missing from the archive")
            prog.start("blob", f"layer {i + 1}/{len(cand.layers)}")
            with src.open(lr.name) as f:
                kind = compression.detect(f.read(4))
            if src.in_store and lr.digest is not None and self.content.exists(lr.digest):
                digest, size = lr.digest, self.content.size(lr.digest)  # verified when it was committed
                if lr.size is not None and size != lr.size:
                    raise InvalidInputError(f"{what}: {size} bytes in the store, the manifest says {lr.size}")
                prog.add(size)
            else:
                with src.open(lr.name) as f:
                    digest, size = self._ingest(txn, f, lr.digest, lr.size, prog, what)
            blobs.append((digest, size, kind))

        prog.start("read", "image config")
        if cand.legacy_v1:
            config_bytes = self._legacy_config(cand, blobs)
            config_digest = self._put_bytes(txn, config_bytes)
        else:
            assert cand.config_name is not None
            if not src.exists(cand.config_name):
                raise InvalidInputError(f"{src.description}: image config {cand.config_name} is missing")
            if src.size(cand.config_name) > m.MAX_JSON_BYTES:
                raise InvalidInputError(f"{src.description}: image config is too large")
            with src.open(cand.config_name) as f:
                config_digest, _ = self._ingest(
                    txn, f, cand.config_digest, cand.config_size, None, f"{src.description}: image config"
                )
            config_bytes = self.content.read_bytes(config_digest)
        cfg = m.parse_model(m.ConfigFile, config_bytes, f"{src.description}: image config")
        if cfg.rootfs.type != "layers":
            raise InvalidInputError(f"{src.description}: unsupported rootfs type {cfg.rootfs.type!r}")
        if len(cfg.rootfs.diff_ids) != len(blobs):
            raise InvalidInputError(
                f"{src.description}: config lists {len(cfg.rootfs.diff_ids)} layer diff_ids but the "
                f"manifest has {len(blobs)} layers"
            )

        prog.start("read", "manifest")
        if cand.manifest_bytes is not None:
            manifest_digest = self._put_bytes(txn, cand.manifest_bytes, cand.manifest_digest)
            man = m.parse_model(m.Manifest, cand.manifest_bytes, "manifest")
        else:
            doc = {
                "schemaVersion": 2,
                "mediaType": m.MT_OCI_MANIFEST,
                "config": {"mediaType": m.MT_OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                "layers": [
                    {"mediaType": m.layer_media_type(kind), "digest": d, "size": s} for d, s, kind in blobs
                ],
            }
            raw = m.canonical_json(doc)
            manifest_digest = self._put_bytes(txn, raw)
            man = m.parse_model(m.Manifest, raw, "manifest")

        chains = dg.chain_ids(cfg.rootfs.diff_ids)
        for i, (desc, diff_id, chain) in enumerate(zip(man.layers, cfg.rootfs.diff_ids, chains, strict=True)):
            prog.start("unpack", f"layer {i + 1}/{len(man.layers)}")
            layer = Layer(desc.digest, diff_id, chain, desc.media_type or m.MT_OCI_LAYER, desc.size)
            self._ensure_layer(layer, txn, prog, f"{src.description}: layer {i} ({desc.digest[:19]})")
        return config_digest, manifest_digest

    def _legacy_config(self, cand: ar.Candidate, blobs: builtins.list[tuple[str, int, str]]) -> bytes:
        from faasd.images.extract import _TarStream

        diff_ids = []
        for digest, _, _ in blobs:
            with self.content.open(digest) as f:
                reader, counter, _kind = compression.open_decompressed(f)
                stream = _TarStream(reader, self.limits, lambda c=counter: c.count, f"layer {digest}")  # type: ignore[misc]
                stream.drain()
                diff_ids.append(stream.digest)
        top = cand.legacy_v1[-1]
        doc = {
            "architecture": top.get("architecture") or ar.host_arch(),
            "os": top.get("os") or "linux",
            "config": top.get("config") or {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": v1.get("created"), "created_by": "legacy docker-archive import"}
                for v1 in cand.legacy_v1
            ],
        }
        if top.get("created"):
            doc["created"] = top["created"]
        return m.canonical_json(doc)

    def tag(self, ref_or_id: str, new_ref: str) -> Image:
        """Add ``new_ref`` to an existing image (moving it if another image had it)."""
        name = normalize_ref(new_ref)
        with self._locked_index() as data:
            iid, _ = self._resolve(data, ref_or_id)
            data["refs"][name] = data["images"][iid]["manifest"]
        return self.get(iid)

    # ================================================================ leases / remove / gc
    def lease(self, image_id: str, holder: str) -> Image:
        """Mark an image in use by ``holder`` (a sandbox or function id); idempotent."""
        if not holder:
            raise InvalidInputError("lease holder must be a non-empty string")
        with self._locked_index() as data:
            iid, _ = self._resolve(data, image_id)
            data["images"][iid].setdefault("leases", {})[holder] = time.time()
        return self.get(iid)

    def release(self, image_id: str, holder: str) -> None:
        """Drop ``holder``'s lease (no error if it had none). An image removed with force while leased
        disappears with its last lease."""
        with self._locked_index() as data:
            iid = image_id if image_id in data["images"] else self._resolve(data, image_id)[0]
            rec = data["images"][iid]
            rec.get("leases", {}).pop(holder, None)
            if rec.get("deleted") and not rec.get("leases"):
                del data["images"][iid]

    def release_all(self, holder: str) -> builtins.list[str]:
        """Drop every lease of ``holder`` (e.g. a sandbox found dead after a crash); returns the image ids."""
        released = []
        with self._locked_index() as data:
            for iid, rec in list(data["images"].items()):
                if rec.get("leases", {}).pop(holder, None) is not None:
                    released.append(iid)
                    if rec.get("deleted") and not rec.get("leases"):
                        del data["images"][iid]
        return released

    def remove(self, ref: str, force: bool = False) -> builtins.list[str]:
        """Remove a ref, or an image by id. Returns the refs removed.

        Removing the last ref of an image removes the image record (blobs and layers go at the
        next ``gc``). A leased image is refused (ConflictError) unless ``force``; with force it is
        untagged and disappears when its last lease is released. Removing by id an image that has
        several refs also needs ``force``.
        """
        with self._locked_index() as data:
            iid, matched = self._resolve(data, ref)
            rec = data["images"][iid]
            refs = sorted(r for r, md in data["refs"].items() if md == rec["manifest"])
            to_remove = [matched] if matched else refs
            if matched is None and len(refs) > 1 and not force:
                raise ConflictError(
                    f"image {ref} has {len(refs)} refs ({', '.join(refs)}); "
                    "remove them one by one or use --force"
                )
            last = set(to_remove) >= set(refs)
            leases = sorted(rec.get("leases", {}))
            if last and leases and not force:
                raise ConflictError(
                    f"image {ref} is in use by {', '.join(leases[:5])}; stop those first or use --force"
                )
            for r in to_remove:
                data["refs"].pop(r, None)
            if last:
                if leases:
                    rec["deleted"] = True
                else:
                    del data["images"][iid]
        return to_remove

    def gc(self) -> GcReport:
        """Delete blobs and unpacked layers no image references, stale temp files, and force-removed images
        whose leases are gone. Waits for imports in flight to finish."""
        report = GcReport()
        with _flock(self._gc_lock), self._locked_index() as data:
            for iid, rec in list(data["images"].items()):
                if rec.get("deleted") and not rec.get("leases"):
                    del data["images"][iid]
                    report.removed_images.append(iid)
            used_blobs, used_chains = self._referenced(data)
            for d in self.content.list():
                if d not in used_blobs:
                    with contextlib.suppress(FaasdError):
                        report.freed_bytes += self.content.size(d)
                    if self.content.delete(d):
                        report.removed_blobs.append(d)
            self.content.clean_ingest()
            if self.layers_dir.is_dir():
                used_hex = {dg.hex_of(c) for c in used_chains}
                for p in self.layers_dir.iterdir():
                    if p.name == ".locks":
                        continue
                    if p.name.startswith(".tmp-") or (dg.is_hex(p.name) and p.name not in used_hex):
                        report.freed_bytes += _tree_size(p)
                        _rmtree(p)
                        if dg.is_hex(p.name):
                            report.removed_layers.append(dg.from_hex(p.name))
                locks = self.layers_dir / ".locks"
                if locks.is_dir():
                    for lk in locks.iterdir():
                        if lk.stem not in used_hex:
                            lk.unlink(missing_ok=True)
        return report

    # ================================================================ writer
    def create_image(
        self,
        rootfs_or_layers: Path | Sequence[Path],
        config: ImageConfig,
        ref: str | None = None,
        *,
        architecture: str | None = None,
        os_name: str = "linux",
        mtime: int | None = None,
        created: str | None = None,
        history: Sequence[str] | None = None,
        compression: str = "gzip",
        progress: ProgressCallback | None = None,
    ) -> Image:
        """Build an image from one rootfs dir, or several dirs used as layers (lowest first).

        Each dir becomes a deterministic layer (overlay whiteouts in a dir become ``.wh.``
        entries); device nodes and sockets are left out. ``mtime`` clamps file times for
        reproducible output. ``compression="zstd"`` builds several times faster than gzip (Docker
        < 23 cannot read zstd layers). Used for base images.
        """
        dirs = (
            [Path(rootfs_or_layers)] if isinstance(rootfs_or_layers, (str, Path)) else list(rootfs_or_layers)
        )
        if not dirs:
            raise InvalidInputError("create_image needs at least one layer directory")
        refs = [normalize_ref(ref)] if ref else []
        base_cfg: dict[str, Any] = {
            "architecture": architecture or ar.host_arch(),
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
        if created:
            base_cfg["created"] = created
        comments = list(history or [])
        entries = [
            (d, "/", None, comments[i] if i < len(comments) else f"faasd create_image layer {i}")
            for i, d in enumerate(dirs)
        ]
        return self._write(base_cfg, [], config, entries, refs, mtime, progress, compression)

    def add_layer(
        self,
        base_ref: str,
        source_dir: Path,
        dest: str = "/function",
        ref: str | None = None,
        config_overrides: Mapping[str, Any] | ImageConfig | None = None,
        *,
        owner: tuple[int, int] | None = (0, 0),
        mtime: int | None = None,
        compression: str = "gzip",
        progress: ProgressCallback | None = None,
    ) -> Image:
        """A new image = ``base_ref`` + ``source_dir`` as one layer at ``dest`` (source deploy).

        Files are owned by ``owner`` (root by default; None keeps the source's ids).
        ``config_overrides`` are ImageConfig fields (e.g. ``{"cmd": [...], "working_dir": "/function"}``).
        """
        base = self.get(base_ref)
        refs = [normalize_ref(ref)] if ref else []
        base_cfg = m.parse_json(self.content.read_bytes(base.id), "base config")
        base_man = m.parse_model(m.Manifest, self.content.read_bytes(base.manifest_digest), "base manifest")
        if isinstance(config_overrides, ImageConfig):
            new_config = config_overrides
        else:
            try:
                new_config = ImageConfig.model_validate(
                    {**base.config.model_dump(), **(config_overrides or {})}
                )
            except Exception as exc:
                raise InvalidInputError(f"invalid config overrides: {exc}") from None
        entries = [(Path(source_dir), dest, owner, f"faasd add_layer {dest}")]
        return self._write(base_cfg, base_man.layers, new_config, entries, refs, mtime, progress, compression)

    def _write(
        self,
        base_cfg: dict[str, Any],
        base_layers: Sequence[m.Descriptor],
        config: ImageConfig,
        entries: Sequence[tuple[Path, str, tuple[int, int] | None, str]],
        refs: builtins.list[str],
        mtime: int | None,
        progress: ProgressCallback | None,
        compression: str = "gzip",
    ) -> Image:
        for d, *_ in entries:
            if not Path(d).is_dir():
                raise InvalidInputError(f"{d} is not a directory")
        prog = _Progress(progress, 2 * len(entries) + 1, None)
        cfg = copy.deepcopy(base_cfg)
        cfg["config"] = {**(cfg.get("config") or {}), **config.to_oci()}
        for key in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "StopSignal"):
            if key not in config.to_oci():
                cfg["config"].pop(key, None)
        layer_descs = [d.model_dump(by_alias=True, exclude_none=True) for d in base_layers]
        with self._transaction() as txn:
            new_layers: builtins.list[Layer] = []
            for i, (directory, dest, owner, comment) in enumerate(entries):
                prog.start("blob", f"building layer {i + 1}/{len(entries)}")
                with self.content.writer(prog.add) as w:
                    try:
                        rep = write_layer(
                            Path(directory),
                            cast(BinaryIO, w),
                            dest=dest,
                            mtime=mtime,
                            owner=owner,
                            compression=compression,
                        )
                    except OSError as exc:
                        raise_storage(exc, "a layer")
                    info = w.commit()
                if info.created:
                    txn.blobs.add(info.digest)
                cfg["rootfs"]["diff_ids"].append(rep.diff_id)
                cfg.setdefault("history", []).append({"created_by": comment})
                layer_descs.append(
                    {"mediaType": m.layer_media_type(compression), "digest": info.digest, "size": info.size}
                )
                new_layers.append(
                    Layer(info.digest, rep.diff_id, "", m.layer_media_type(compression), info.size)
                )
            config_bytes = m.canonical_json(cfg)
            config_digest = self._put_bytes(txn, config_bytes)
            manifest = {
                "schemaVersion": 2,
                "mediaType": m.MT_OCI_MANIFEST,
                "config": {"mediaType": m.MT_OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                "layers": layer_descs,
            }
            manifest_digest = self._put_bytes(txn, m.canonical_json(manifest))
            chains = dg.chain_ids(cfg["rootfs"]["diff_ids"])
            all_layers = [
                Layer(d["digest"], diff, chain, d.get("mediaType", m.MT_OCI_LAYER), d["size"])
                for d, diff, chain in zip(layer_descs, cfg["rootfs"]["diff_ids"], chains, strict=True)
            ]
            for i, layer in enumerate(all_layers):
                if i >= len(all_layers) - len(new_layers):
                    prog.start("unpack", f"unpacking layer {i + 1}")
                self._ensure_layer(layer, txn, prog, f"layer {i}")
            self._commit(manifest_digest, config_digest, refs)
        return self.get(config_digest)

    # ================================================================ export
    def export_oci_archive(self, ref: str, path: str | Path) -> Path:
        """Write an image as an OCI archive (a tar of an OCI layout) that skopeo/umoci/podman read."""
        img = self.get(ref)
        path = Path(path)
        name = img.refs[0] if img.refs else None
        desc: dict[str, Any] = {
            "mediaType": m.MT_OCI_MANIFEST,
            "digest": img.manifest_digest,
            "size": self.content.size(img.manifest_digest),
        }
        if name:
            desc["annotations"] = {
                m.ANNOTATION_CONTAINERD_NAME: name,
                m.ANNOTATION_REF_NAME: name.rsplit(":", 1)[1],
            }
        index = {"schemaVersion": 2, "mediaType": m.MT_OCI_INDEX, "manifests": [desc]}
        files: builtins.list[tuple[str, bytes | str]] = [
            ("oci-layout", m.canonical_json({"imageLayoutVersion": m.OCI_LAYOUT_VERSION}).decode()),
            ("index.json", m.canonical_json(index).decode()),
        ]
        blobs = [img.manifest_digest, img.id, *dict.fromkeys(x.digest for x in img.layers)]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmpname = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmpname)
        try:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                for dirname in ("blobs", "blobs/sha256"):
                    info = tarfile.TarInfo(dirname)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
                for fname, text in files:
                    data = text.encode() if isinstance(text, str) else text
                    info = tarfile.TarInfo(fname)
                    info.size, info.mode = len(data), 0o644
                    tf.addfile(info, _bytes_io(data))
                for d in blobs:
                    info = tarfile.TarInfo(ar.blob_name(d))
                    info.size, info.mode = self.content.size(d), 0o444
                    with self.content.open(d) as f:
                        tf.addfile(info, f)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise_storage(exc, str(path))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


def _bytes_io(data: bytes) -> BinaryIO:
    import io

    return io.BytesIO(data)
