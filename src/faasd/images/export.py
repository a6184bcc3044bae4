"""Exporting an image as an OCI archive (a tar of an OCI layout) that skopeo/umoci/podman read."""

from __future__ import annotations

import builtins
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from faasd.content.store import raise_storage
from faasd.images import archive as ar
from faasd.images import models as m
from faasd.images.index import ImageIndex


class ImageExporter(ImageIndex):
    """OCI archive export."""

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
