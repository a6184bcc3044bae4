"""Writing images: a rootfs (or several dirs as layers) as a new image, or one layer on top of an image."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from faasd.content import digest as dg
from faasd.content.store import raise_storage
from faasd.errors import InvalidInputError
from faasd.images import archive as ar
from faasd.images import models as m
from faasd.images.layerwriter import write_layer
from faasd.images.models import Image, ImageConfig, Layer
from faasd.images.refs import normalize_ref
from faasd.images.txn import ProgressCallback, _Progress
from faasd.images.unpack import LayerUnpacker


class ImageWriter(LayerUnpacker):
    """The image writer (base images, source deploys)."""

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
