"""Reading image archives: format detection and a uniform view of the images they hold.

Supported inputs (autodetected):

* **OCI image layout** directory (``oci-layout``, ``index.json``, ``blobs/sha256/...``);
* **OCI archive**: a tar (optionally gzip/zstd-compressed) of such a layout;
* **docker-archive** (``docker save``): ``manifest.json`` listing ``Config``/``RepoTags``/``Layers``
  (Docker >= 25 writes both this and an OCI layout; we prefer the OCI view then);
* **legacy docker-archive**: only ``repositories`` and ``<id>/json`` + ``<id>/layer.tar`` chains.

Nothing is extracted to disk here: members are read straight out of the archive. Names inside an
archive are normalised and may not contain ``..``; in-archive symlinks (old Docker dedupes layers
that way) are resolved within the archive only.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from faasd.content import digest as dg
from faasd.errors import InvalidInputError, NotFoundError
from faasd.images import models as m

MAX_INDEX_DEPTH = 4
MAX_ARCHIVE_MEMBERS = 100_000


def _norm(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\x00" in name:
        raise InvalidInputError(f"archive member name {name!r} is not allowed (contains '..' or NUL)")
    return "/".join(parts)


class Source(Protocol):
    description: str
    in_store: bool
    """True when ``blobs/sha256/<hex>`` are committed (so verified) content-store blobs: not copied again."""

    def exists(self, name: str) -> bool: ...
    def size(self, name: str) -> int: ...
    def open(self, name: str) -> BinaryIO: ...
    def close(self) -> None: ...


class DirSource:
    in_store = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"OCI layout {root}"

    def _path(self, name: str) -> Path:
        return self.root / _norm(name)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise InvalidInputError(f"{self.description}: {name} is missing") from None

    def close(self) -> None:
        pass


class TarSource:
    in_store = False

    def __init__(self, path: Path, description: str = "") -> None:
        self.path = Path(path)
        self.description = description or f"archive {path}"
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            self._tf = tarfile.open(self.path, mode="r:*")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidInputError(f"{self.path} is not a readable tar archive ({exc})") from None
        try:
            for member in self._tf:
                if len(self._members) >= MAX_ARCHIVE_MEMBERS:
                    raise InvalidInputError(f"{self.path} has more than {MAX_ARCHIVE_MEMBERS} members")
                self._members[_norm(member.name)] = member
        except (tarfile.TarError, EOFError, OSError) as exc:
            self._tf.close()
            raise InvalidInputError(f"{self.path} is not a readable tar archive ({exc})") from None
        except BaseException:
            self._tf.close()
            raise
        self._tf.members = []  # type: ignore[attr-defined]  # lookups go through our own index

    def names(self) -> list[str]:
        return list(self._members)

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        name = _norm(name)
        for _ in range(16):
            member = self._members.get(name)
            if member is None or not member.issym():
                return member
            target = member.linkname
            base = posixpath.dirname(name)
            joined = (
                posixpath.normpath(posixpath.join(base, target)) if not target.startswith("/") else target
            )
            if joined.startswith("../") or joined == "..":
                raise InvalidInputError(f"{self.description}: {name} links outside the archive")
            name = _norm(joined)
        raise InvalidInputError(f"{self.description}: too many symlinks resolving {name}")

    def exists(self, name: str) -> bool:
        member = self._resolve(name)
        return member is not None and (member.isreg() or member.islnk())

    def size(self, name: str) -> int:
        member = self._resolve(name)
        if member is None:
            raise InvalidInputError(f"{self.description}: {name} is missing")
        if member.islnk():
            target = self._resolve(member.linkname)
            if target is None:
                raise InvalidInputError(f"{self.description}: {name} is a dangling hard link")
            member = target
        return member.size

    def open(self, name: str) -> BinaryIO:
        member = self._resolve(name)
        if member is not None and member.islnk():
            member = self._resolve(member.linkname)
        if member is None or not member.isreg():
            raise InvalidInputError(f"{self.description}: {name} is missing or not a regular file")
        f = self._tf.extractfile(member)
        assert f is not None
        return cast(BinaryIO, f)

    def close(self) -> None:
        self._tf.close()


def read_json(src: Source, name: str, what: str) -> Any:
    if not src.exists(name):
        raise InvalidInputError(f"{src.description}: {what} ({name}) is missing")
    if src.size(name) > m.MAX_JSON_BYTES:
        raise InvalidInputError(f"{src.description}: {what} is larger than {m.MAX_JSON_BYTES} bytes")
    with src.open(name) as f:
        return m.parse_json(f.read(), f"{src.description}: {what}")


def read_blob(src: Source, desc: m.Descriptor, what: str) -> bytes:
    """Read a small (JSON) blob of an OCI layout and verify its digest and size."""
    name = blob_name(desc.digest)
    if not src.exists(name):
        raise InvalidInputError(f"{src.description}: {what} blob {desc.digest} is missing")
    if desc.size > m.MAX_JSON_BYTES or src.size(name) > m.MAX_JSON_BYTES:
        raise InvalidInputError(f"{src.description}: {what} {desc.digest} is too large")
    with src.open(name) as f:
        data = f.read()
    if len(data) != desc.size or dg.sha256_bytes(data) != desc.digest:
        raise InvalidInputError(
            f"{src.description}: {what} {desc.digest} does not match its digest/size (corrupt archive)"
        )
    return data


def blob_name(digest: str) -> str:
    return f"blobs/sha256/{dg.hex_of(digest)}"


@dataclass
class LayerRef:
    name: str
    """Member name in the source."""
    digest: str | None = None
    size: int | None = None
    media_type: str | None = None


@dataclass
class Candidate:
    """One image found in an archive, before anything is written to the store."""

    names: list[str]
    layers: list[LayerRef]
    config_name: str | None = None
    config_digest: str | None = None
    config_size: int | None = None
    manifest_bytes: bytes | None = None
    """Original manifest (OCI); None when we synthesize one (docker-archive)."""
    manifest_digest: str | None = None
    legacy_v1: list[dict[str, Any]] = field(default_factory=list)
    """Legacy docker-archive: the v1 JSON of each layer, lowest first (config is synthesized)."""


def host_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


@dataclass
class ArchiveContents:
    format: str
    source: Source
    candidates: list[Candidate]


def open_archive(path: Path) -> ArchiveContents:
    """Detect the format of ``path`` and list the images it contains."""
    path = Path(path)
    if path.is_dir():
        if not (path / "index.json").is_file():
            raise InvalidInputError(f"{path} is a directory but not an OCI image layout (no index.json)")
        src: Source = DirSource(path)
        return ArchiveContents("oci-layout", src, _oci_candidates(src))
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    tsrc = TarSource(path)
    try:
        names = set(tsrc.names())
        if "index.json" in names and "oci-layout" in names:
            tsrc.description = f"OCI archive {path.name}"
            cands = _oci_candidates(tsrc)
            if "manifest.json" in names:  # Docker >= 25: take the tags from manifest.json
                tags = _docker_tags(tsrc)
                for c in cands:
                    if not c.names and c.config_digest in tags:
                        c.names = tags[c.config_digest]
            return ArchiveContents("oci-archive", tsrc, cands)
        if "manifest.json" in names:
            tsrc.description = f"docker archive {path.name}"
            return ArchiveContents("docker-archive", tsrc, _docker_candidates(tsrc))
        if "repositories" in names or any(n.endswith("/layer.tar") for n in names):
            tsrc.description = f"legacy docker archive {path.name}"
            return ArchiveContents("docker-archive-legacy", tsrc, _legacy_candidates(tsrc))
        raise InvalidInputError(
            f"{path} is neither an OCI layout/archive nor a docker-archive "
            "(no index.json+oci-layout, manifest.json or repositories)"
        )
    except BaseException:
        tsrc.close()
        raise


# --- OCI -------------------------------------------------------------------------------------
def _ref_names(annotations: dict[str, str] | None) -> list[str]:
    a = annotations or {}
    full = a.get(m.ANNOTATION_CONTAINERD_NAME)
    if full:
        return [full]
    name = a.get(m.ANNOTATION_REF_NAME)
    # the OCI spec's ref.name is usually a bare tag ("latest", "v1"): that names no repository,
    # so only a full reference ("repo/name:tag") is taken as an image name
    if name and ("/" in name or ":" in name):
        return [name]
    return []


def _platform_ok(desc: m.Descriptor) -> bool:
    p = desc.platform
    return p is None or ((p.os in ("", "linux")) and p.architecture in ("", host_arch()))


def oci_candidates(src: Source) -> list[Candidate]:
    """The linux/<host arch> images of an OCI layout ``src``."""
    return _oci_candidates(src)


def _oci_candidates(src: Source) -> list[Candidate]:
    if src.exists("oci-layout"):
        layout = read_json(src, "oci-layout", "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise InvalidInputError(f"{src.description}: unsupported imageLayoutVersion {version!r}")
    index = m.parse_model(
        m.Index, _dump(read_json(src, "index.json", "index.json")), f"{src.description} index.json"
    )
    out: list[Candidate] = []
    _walk_index(src, index, [], out, 0)
    if not out:
        raise InvalidInputError(f"{src.description}: no linux/{host_arch()} image manifest in index.json")
    return out


def _dump(obj: Any) -> bytes:
    return m.canonical_json(obj)


def _walk_index(src: Source, index: m.Index, names: list[str], out: list[Candidate], depth: int) -> None:
    if depth > MAX_INDEX_DEPTH:
        raise InvalidInputError(f"{src.description}: image indexes nested too deeply")
    for desc in index.manifests:
        dnames = _ref_names(desc.annotations) or names
        if not _platform_ok(desc):
            continue
        mt = desc.media_type
        if mt in m.INDEX_TYPES:
            sub = m.parse_model(
                m.Index, read_blob(src, desc, "image index"), f"{src.description} index {desc.digest}"
            )
            _walk_index(src, sub, dnames, out, depth + 1)
            continue
        if mt and mt not in m.MANIFEST_TYPES:
            continue  # e.g. attestations / artifacts
        raw = read_blob(src, desc, "manifest")
        doc = m.parse_json(raw, f"{src.description} manifest {desc.digest}")
        if isinstance(doc, dict) and "manifests" in doc:  # an index without mediaType on the descriptor
            sub = m.parse_model(m.Index, raw, f"{src.description} index {desc.digest}")
            _walk_index(src, sub, dnames, out, depth + 1)
            continue
        man = m.parse_model(m.Manifest, raw, f"{src.description} manifest {desc.digest}")
        for layer in man.layers:
            if layer.media_type and layer.media_type not in m.LAYER_TYPES:
                raise InvalidInputError(
                    f"{src.description}: layer {layer.digest} has unsupported media type {layer.media_type!r}"
                )
        out.append(
            Candidate(
                names=list(dnames),
                layers=[
                    LayerRef(blob_name(x.digest), x.digest, x.size, x.media_type or None) for x in man.layers
                ],
                config_name=blob_name(man.config.digest),
                config_digest=man.config.digest,
                config_size=man.config.size,
                manifest_bytes=raw,
                manifest_digest=desc.digest,
            )
        )


# --- docker-archive ----------------------------------------------------------------------------
def _expected_digest(name: str, suffix: str = "") -> str | None:
    """Docker names configs ``<hex>.json`` and (>= 25) blobs ``blobs/sha256/<hex>``: verify those."""
    base = posixpath.basename(name)
    if suffix and base.endswith(suffix):
        base = base[: -len(suffix)]
    if dg.is_hex(base) and (suffix or name.startswith("blobs/sha256/")):
        return dg.from_hex(base)
    return None


def _docker_manifest(src: Source) -> list[dict[str, Any]]:
    doc = read_json(src, "manifest.json", "manifest.json")
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise InvalidInputError(f"{src.description}: manifest.json must be a JSON list of objects")
    return doc


def _docker_tags(src: Source) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for entry in _docker_manifest(src):
        cfg = entry.get("Config")
        if isinstance(cfg, str):
            d = _expected_digest(_norm(cfg), ".json") or _expected_digest(_norm(cfg))
            if d:
                tags[d] = [t for t in entry.get("RepoTags") or [] if isinstance(t, str)]
    return tags


def _docker_candidates(src: Source) -> list[Candidate]:
    out = []
    for i, entry in enumerate(_docker_manifest(src)):
        cfg = entry.get("Config")
        layers = entry.get("Layers")
        tags = entry.get("RepoTags") or []
        if (
            not isinstance(cfg, str)
            or not isinstance(layers, list)
            or not all(isinstance(x, str) for x in layers)
        ):
            raise InvalidInputError(f"{src.description}: manifest.json entry {i} needs 'Config' and 'Layers'")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInputError(f"{src.description}: manifest.json entry {i}: 'RepoTags' must be strings")
        cfg_name = _norm(cfg)
        refs = []
        for name in layers:
            n = _norm(name)
            refs.append(LayerRef(n, _expected_digest(n), None, None))
        out.append(
            Candidate(
                names=list(tags),
                layers=refs,
                config_name=cfg_name,
                config_digest=_expected_digest(cfg_name, ".json") or _expected_digest(cfg_name),
            )
        )
    if not out:
        raise InvalidInputError(f"{src.description}: manifest.json lists no images")
    return out


def _legacy_candidates(src: Source) -> list[Candidate]:
    repos: dict[str, Any] = {}
    if src.exists("repositories"):
        doc = read_json(src, "repositories", "repositories")
        if not isinstance(doc, dict):
            raise InvalidInputError(f"{src.description}: 'repositories' must be a JSON object")
        repos = doc
    tops: dict[str, list[str]] = {}
    for repo, tags in repos.items():
        if not isinstance(tags, dict):
            raise InvalidInputError(f"{src.description}: 'repositories' entry {repo!r} must map tags to ids")
        for tag, top_id in tags.items():
            if not isinstance(top_id, str) or not dg.is_hex(top_id):
                raise InvalidInputError(f"{src.description}: invalid layer id for {repo}:{tag}")
            tops.setdefault(top_id, []).append(f"{repo}:{tag}")
    if not tops:
        raise InvalidInputError(
            f"{src.description}: legacy archive without a 'repositories' file is not supported"
        )
    out = []
    for top, names in tops.items():
        chain: list[dict[str, Any]] = []
        layer_id: str | None = top
        while layer_id:
            if len(chain) > 1000:
                raise InvalidInputError(f"{src.description}: layer parent chain too long or cyclic")
            if not dg.is_hex(layer_id):
                raise InvalidInputError(f"{src.description}: invalid layer id {layer_id!r}")
            v1 = read_json(src, f"{layer_id}/json", f"layer {layer_id[:12]} json")
            if not isinstance(v1, dict):
                raise InvalidInputError(f"{src.description}: {layer_id}/json must be an object")
            chain.append({**v1, "_id": layer_id})
            parent = v1.get("parent")
            layer_id = parent if isinstance(parent, str) and parent else None
        chain.reverse()
        out.append(
            Candidate(
                names=names,
                layers=[LayerRef(f"{v1['_id']}/layer.tar") for v1 in chain],
                legacy_v1=chain,
            )
        )
    return out
