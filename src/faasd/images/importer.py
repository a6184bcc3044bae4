"""Importing images: docker-archive, OCI archive, OCI layout dir, or a layout in the content store."""

from __future__ import annotations

import builtins
from pathlib import Path

from faasd.content import digest as dg
from faasd.errors import InvalidInputError
from faasd.images import archive as ar
from faasd.images import compression
from faasd.images import models as m
from faasd.images.models import Image, Layer
from faasd.images.refs import normalize_ref
from faasd.images.txn import ProgressCallback, _Progress, _Txn
from faasd.images.unpack import LayerUnpacker


class ImageImporter(LayerUnpacker):
    """The import paths of the store (verified, unpacked, then named: one transaction)."""

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
            if refs and any(ImageImporter._valid_ref(n) and normalize_ref(n) == refs[0] for n in c.names):
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
        from faasd.images.tarstream import _TarStream

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
