"""Public helpers: flatten a ``docker save`` archive into a plain directory, and the argv an image runs.

``extract_docker_image(fileobj, rootfs_dir)`` applies the image's layers lowest first into one directory
with the image store's safety rules (no ``..``, no following symlinks, no device nodes, size/entry/ratio
limits; see :mod:`faasd.images.extract`); whiteouts delete and opaque directories hide lower content
for real. Each layer's uncompressed digest is checked against the config's ``rootfs.diff_ids``.

``image_command(config)`` combines ENTRYPOINT and CMD as Docker does.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from faasd.errors import InvalidInputError
from faasd.images import models as m
from faasd.images.archive import open_archive, read_json
from faasd.images.extract import ExtractLimits, UnpackReport, unpack_layer
from faasd.images.models import ImageConfig


@dataclass
class ExtractedImage:
    """What :func:`extract_docker_image` wrote: the image's config, names and per-layer reports."""

    rootfs: Path
    config: ImageConfig
    names: list[str] = field(default_factory=list)
    layers: list[UnpackReport] = field(default_factory=list)

    @property
    def command(self) -> list[str]:
        return image_command(self.config)


def extract_docker_image(
    fileobj: BinaryIO,
    rootfs_dir: str | Path,
    *,
    image: str | None = None,
    limits: ExtractLimits | None = None,
) -> ExtractedImage:
    """Flatten the image in a ``docker save`` (or OCI) archive read from ``fileobj`` into ``rootfs_dir``.

    ``image`` picks one by name when the archive holds several. Raises ``InvalidInputError`` naming the
    entry and the reason for anything unsafe or inconsistent; ``rootfs_dir`` then holds a partial tree
    that the caller removes."""
    dest = Path(rootfs_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="faasd-extract-") as tmp:
        archive = Path(tmp) / "image.tar"
        with archive.open("wb") as out:
            shutil.copyfileobj(fileobj, out, 1024 * 1024)
        contents = open_archive(archive)
        try:
            cands = contents.candidates
            if image is not None:
                cands = [c for c in cands if image in c.names]
            if len(cands) != 1:
                names = [n for c in contents.candidates for n in c.names] or ["<untagged>"]
                raise InvalidInputError(
                    f"the archive holds {len(contents.candidates)} image(s) ({', '.join(names)}); "
                    + (
                        "name one of them with image="
                        if image is None or cands
                        else f"none is named {image!r}"
                    )
                )
            cand = cands[0]
            config = ImageConfig()
            diff_ids: list[str] = []
            if cand.config_name is not None:
                doc = read_json(contents.source, cand.config_name, "image config")
                cfg = m.ConfigFile.model_validate(doc)
                config = ImageConfig.from_container_config(cfg.config)
                diff_ids = list(cfg.rootfs.diff_ids)
            if diff_ids and len(diff_ids) != len(cand.layers):
                raise InvalidInputError(
                    f"the image config lists {len(diff_ids)} layers but the archive has {len(cand.layers)}"
                )
            reports = []
            for i, layer in enumerate(cand.layers):
                with contents.source.open(layer.name) as blob:
                    report = unpack_layer(blob, dest, "flat", limits, what=f"layer {i} ({layer.name})")
                if diff_ids and report.diff_id != diff_ids[i]:
                    raise InvalidInputError(
                        f"layer {i} ({layer.name}) has digest {report.diff_id}, but the image config says "
                        f"{diff_ids[i]}: the archive is corrupt or was tampered with"
                    )
                reports.append(report)
        finally:
            contents.source.close()
    return ExtractedImage(dest, config, list(cand.names), reports)


def image_command(config: ImageConfig | Mapping[str, Any]) -> list[str]:
    """The argv an image runs, from its ENTRYPOINT and CMD as Docker combines them.

    ``config`` is an :class:`ImageConfig`, an image config file (``{"config": {...}}``) or its
    ``config`` object (``{"Entrypoint": [...], "Cmd": [...]}``; lower-case keys work too). With an
    ENTRYPOINT the CMD is appended to it as arguments; without one the CMD is the command. A string
    (shell form) becomes ``["/bin/sh", "-c", string]``. Returns ``[]`` when the image names nothing to run."""
    if isinstance(config, ImageConfig):
        entrypoint: Any = config.entrypoint
        cmd: Any = config.cmd
    else:
        inner = config.get("config") if isinstance(config.get("config"), Mapping) else config
        assert isinstance(inner, Mapping)
        entrypoint = inner.get("Entrypoint", inner.get("entrypoint"))
        cmd = inner.get("Cmd", inner.get("cmd"))
    return [*_argv(entrypoint, "Entrypoint"), *_argv(cmd, "Cmd")]


def _argv(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return ["/bin/sh", "-c", value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInputError(f"{what} must be a list of strings (or a shell-form string), got {value!r}")
