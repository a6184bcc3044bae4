"""The image index (``images/index.json``): refs → manifests, lookups, tags, leases and removal.

``index.json`` is read-modify-written under ``images/index.lock`` (flock); images load lazily from the
content store (manifest + config) and are cached by manifest digest."""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

from faasd.config import Settings
from faasd.content import ContentStore
from faasd.content import digest as dg
from faasd.content.store import raise_storage
from faasd.errors import ConflictError, FaasdError, InvalidInputError, NotFoundError
from faasd.filelock import locked_file
from faasd.images import models as m
from faasd.images.extract import ExtractLimits
from faasd.images.models import Image, ImageConfig, Layer
from faasd.images.refs import normalize_ref

INDEX_VERSION = 1


class ImageIndex:
    """The index half of :class:`~faasd.images.store.ImageStore` (state, lookups, refs, leases)."""

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
        with locked_file(self._index_lock):
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

    def _referenced(self, data: dict[str, Any]) -> tuple[set[str], set[str]]:
        blobs: set[str] = set()
        chains: set[str] = set()
        for image_id, rec in data["images"].items():
            blobs.update({image_id, rec["manifest"]})  # even if the image cannot be loaded
        for img in self._images(data, include_deleted=True):
            blobs.update(x.digest for x in img.layers)
            chains.update(x.chain_id for x in img.layers)
        return blobs, chains

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
