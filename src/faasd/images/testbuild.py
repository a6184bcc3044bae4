"""Hand-built layers and image archives, for tests (ours and other packages').

Everything is made with ``tarfile`` in memory, so tests can craft exactly the entries they need,
including malicious ones (``..`` names, links out of the tree, devices, whiteouts).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from faasd.images import models as m


@dataclass
class Entry:
    name: str
    kind: str = "file"
    """file | dir | symlink | hardlink | fifo | char | block"""
    data: bytes = b""
    linkname: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    size: int | None = None
    """Override the header size (e.g. to fake a huge sparse member)."""
    pax: dict[str, str] = field(default_factory=dict)


def F(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode=mode, **kw)


def D(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def L(name: str, target: str, **kw: Any) -> Entry:
    return Entry(name, "symlink", linkname=target, mode=0o777, **kw)


def H(name: str, target: str, **kw: Any) -> Entry:
    return Entry(name, "hardlink", linkname=target, mode=0o644, **kw)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}


def layer_tar(entries: Sequence[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar with exactly these entries, in this order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.linkname
            if e.pax:
                info.pax_headers = dict(e.pax)
            if e.kind == "file":
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
            else:
                tf.addfile(info)
    data = buf.getvalue()
    return data


def compress(data: bytes, kind: str = "gzip") -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class BuiltImage:
    layers: list[bytes]
    """Layer blobs as stored (possibly compressed)."""
    diff_ids: list[str]
    config: bytes
    manifest: bytes

    @property
    def config_digest(self) -> str:
        return sha(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)


def build_image(
    layers: Sequence[Sequence[Entry] | bytes],
    compression: str = "gzip",
    config: dict[str, Any] | None = None,
    diff_ids: list[str] | None = None,
) -> BuiltImage:
    """Layer blobs + config + OCI manifest. ``layers`` items are entry lists or raw tar bytes."""
    raw = [x if isinstance(x, bytes) else layer_tar(x) for x in layers]
    blobs = [compress(x, compression) for x in raw]
    ids = diff_ids if diff_ids is not None else [sha(x) for x in raw]
    cfg: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": config if config is not None else {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }
    from faasd.images.archive import host_arch

    cfg["architecture"] = host_arch()
    cfg_bytes = json.dumps(cfg).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": m.MT_OCI_MANIFEST,
        "config": {"mediaType": m.MT_OCI_CONFIG, "digest": sha(cfg_bytes), "size": len(cfg_bytes)},
        "layers": [
            {"mediaType": m.layer_media_type(compression), "digest": sha(b), "size": len(b)} for b in blobs
        ],
    }
    return BuiltImage(blobs, ids, cfg_bytes, json.dumps(manifest).encode())


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def write_oci_layout(img: BuiltImage, directory: Path, ref_name: str | None = "latest") -> Path:
    directory = Path(directory)
    (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in [*img.layers, img.config, img.manifest]:
        (directory / "blobs" / "sha256" / sha(blob)[7:]).write_bytes(blob)
    desc: dict[str, Any] = {
        "mediaType": m.MT_OCI_MANIFEST,
        "digest": img.manifest_digest,
        "size": len(img.manifest),
    }
    if ref_name:
        desc["annotations"] = {m.ANNOTATION_REF_NAME: ref_name}
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return directory


def write_oci_archive(img: BuiltImage, path: Path, ref_name: str | None = "latest") -> Path:
    desc: dict[str, Any] = {
        "mediaType": m.MT_OCI_MANIFEST,
        "digest": img.manifest_digest,
        "size": len(img.manifest),
    }
    if ref_name:
        desc["annotations"] = {m.ANNOTATION_REF_NAME: ref_name}
    with tarfile.open(path, "w") as tf:
        _add(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode())
        for blob in [*img.layers, img.config, img.manifest]:
            _add(tf, f"blobs/sha256/{sha(blob)[7:]}", blob)
    return Path(path)


def write_docker_archive(
    img: BuiltImage, path: Path, tags: Sequence[str] = ("test/image:latest",), manifest_override: Any = None
) -> Path:
    """A ``docker save``-style archive (pre-25 layout: ``<id>/layer.tar``, ``<config hex>.json``)."""
    with tarfile.open(path, "w") as tf:
        layer_names = []
        for i, blob in enumerate(img.layers):
            name = f"{sha(blob)[7:]}/layer.tar"
            if name not in layer_names:
                _add(tf, name, blob)
            layer_names.append(name)
            del i
        cfg_name = f"{img.config_digest[7:]}.json"
        _add(tf, cfg_name, img.config)
        manifest = (
            manifest_override
            if manifest_override is not None
            else [{"Config": cfg_name, "RepoTags": list(tags), "Layers": layer_names}]
        )
        _add(tf, "manifest.json", manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode())
    return Path(path)


def write_legacy_docker_archive(
    layers: Sequence[Sequence[Entry]],
    path: Path,
    repo: str = "legacy/img",
    tag: str = "v1",
    config: dict[str, Any] | None = None,
) -> Path:
    """Docker < 1.10 style: ``repositories`` + ``<id>/json`` parent chain + ``<id>/layer.tar``."""
    with tarfile.open(path, "w") as tf:
        parent = None
        for i, entries in enumerate(layers):
            lid = hashlib.sha256(f"legacy-{i}-{parent}".encode()).hexdigest()
            v1: dict[str, Any] = {"id": lid, "created": "2020-01-01T00:00:00Z", "os": "linux"}
            if parent:
                v1["parent"] = parent
            if i == len(layers) - 1:
                v1["config"] = config or {"Cmd": ["/bin/true"]}
            _add(tf, f"{lid}/json", json.dumps(v1).encode())
            _add(tf, f"{lid}/layer.tar", layer_tar(entries))
            _add(tf, f"{lid}/VERSION", b"1.0")
            parent = lid
        _add(tf, "repositories", json.dumps({repo: {tag: parent}}).encode())
    return Path(path)


def three_layer_image(compression: str = "gzip") -> BuiltImage:
    """The reference multi-layer image: deletions, an opaque dir, and re-adding after deletion.

    Layer 0: etc/{keep,gone}, data/{a,b,sub/c}, olddir/x, lib/libx.so, bin/tool (+hardlink)
    Layer 1: deletes etc/gone and olddir; makes data opaque with data/new; adds etc/added
    Layer 2: re-adds olddir/y (after its deletion) and etc/gone (new content)
    Merged:  etc/{keep,added,gone(v2)}, data/new only, olddir/y only, lib/libx.so, bin/tool, bin/tool2
    """
    l0 = [
        D("etc"),
        F("etc/keep", "keep"),
        F("etc/gone", "v1"),
        D("data"),
        F("data/a", "a"),
        F("data/b", "b"),
        D("data/sub"),
        F("data/sub/c", "c"),
        D("olddir"),
        F("olddir/x", "x"),
        D("lib"),
        F("lib/libx.so", b"\x7fELF" + b"\0" * 100, mode=0o755),
        D("bin"),
        F("bin/tool", "#!/bin/sh\necho hi\n", mode=0o4755),
        H("bin/tool2", "bin/tool"),
    ]
    l1 = [
        D("etc"),
        F("etc/.wh.gone"),
        F("etc/added", "added"),
        F(".wh.olddir"),
        D("data"),
        F("data/.wh..wh..opq"),
        F("data/new", "new"),
    ]
    l2 = [D("olddir"), F("olddir/y", "y"), D("etc"), F("etc/gone", "v2")]
    return build_image(
        [l0, l1, l2],
        compression=compression,
        config={
            "Entrypoint": ["/bin/tool"],
            "Cmd": ["--help"],
            "Env": ["A=1", "PATH=/bin"],
            "WorkingDir": "/data",
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.example": "yes"},
        },
    )


def leftovers(store: Any) -> dict[str, list[str]]:
    """What an ImageStore holds: images, blobs, layer dirs and ingest files (for 'nothing left' checks)."""
    layers = (
        sorted(p.name for p in store.layers_dir.iterdir() if p.name != ".locks")
        if store.layers_dir.exists()
        else []
    )
    ingest = sorted(os.listdir(store.content.ingest_dir)) if store.content.ingest_dir.exists() else []
    index = store._read_index()
    return {
        "images": sorted(index["images"]),
        "refs": sorted(index["refs"]),
        "blobs": store.content.list(),
        "layers": layers,
        "ingest": ingest,
    }


def snapshot_tree(root: Path, exclude: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of every path under ``root`` (not following links), minus ``exclude``."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if exclude is not None and Path(dirpath) == exclude:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if exclude is not None and p == exclude:
                continue
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out
