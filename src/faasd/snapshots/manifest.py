"""The snapshot manifest: metadata, file entries, sizes (what ``manifests/<id>.json`` holds), and reports.

A :class:`Snapshot` is a set of directory trees (``criu``, ``upper``, ``bundle``), each a list of
:class:`Entry` (path, type, mode, owner, mtime, xattrs, chunk digests), plus :class:`SnapshotMeta`
(what it was taken from, its ``parent``, labels) and :class:`SnapshotSizes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 1
TREES = ("criu", "upper", "bundle")


@dataclass
class SnapshotMeta:
    """What a snapshot was taken from and what a restore needs to know."""

    source_sandbox: str | None = None
    function: str | None = None
    image_ref: str | None = None
    layers: list[str] = field(default_factory=list)
    """Image layer chain (lowest first), e.g. chain ids or unpacked layer dirs."""
    limits: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    """Snapshot whose upper this snapshot's upper is layered on (nested branches)."""
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entry:
    path: str
    type: str  # file | dir | symlink | char | block | fifo | hardlink
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: dict[str, str] = field(default_factory=dict)  # name -> base64 value
    size: int = 0
    chunks: list[str] = field(default_factory=list)
    target: str | None = None  # symlink target, or hardlink: path of the first link in this tree
    rdev: int = 0


@dataclass
class SnapshotSizes:
    logical_bytes: int = 0
    """Uncompressed size of all file content in the snapshot."""
    stored_bytes: int = 0
    """Compressed size of all distinct chunks the snapshot references."""
    new_bytes: int = 0
    """Compressed bytes this snapshot added to the store (0 when everything was deduplicated)."""
    files: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class SnapshotHead:
    """A snapshot's id, creation time, meta and sizes: its manifest without the file trees (listing a store
    holding many snapshots: :mod:`faasd.snapshots.heads`). Shared: read only."""

    id: str
    created: str
    meta: SnapshotMeta
    sizes: SnapshotSizes
    tree_names: tuple[str, ...] = ()
    """The file trees the snapshot has (``criu``, ``bundle``, ``upper``, ...), without their entries."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotHead:
        return cls(
            id=data["id"],
            created=data["created"],
            meta=SnapshotMeta(**data["meta"]),
            sizes=SnapshotSizes(**data["sizes"]),
            tree_names=tuple(data.get("trees") or ()),
        )


@dataclass
class Snapshot:
    id: str
    created: str
    meta: SnapshotMeta
    trees: dict[str, list[Entry]]
    sizes: SnapshotSizes

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "id": self.id,
            "created": self.created,
            "meta": asdict(self.meta),
            "sizes": asdict(self.sizes),
            "trees": {name: [entry_json(e) for e in entries] for name, entries in self.trees.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        head = SnapshotHead.from_json(data)
        return cls(
            id=head.id,
            created=head.created,
            meta=head.meta,
            sizes=head.sizes,
            trees={name: [Entry(**e) for e in entries] for name, entries in data["trees"].items()},
        )

    def digests(self) -> set[str]:
        return {d for entries in self.trees.values() for e in entries for d in e.chunks}

    @property
    def tree_names(self) -> tuple[str, ...]:
        return tuple(self.trees)


SnapshotInfo = SnapshotHead | Snapshot
"""What a listing, a view or an ownership check reads of a snapshot: its head is enough (id, creation time,
meta, sizes, the names of its trees); a whole manifest will do too."""


@dataclass
class MaterializedSnapshot:
    """Directories a snapshot was written back to (``None`` for a tree the snapshot does not have)."""

    root: Path
    criu: Path | None
    upper: Path | None
    bundle: Path | None


@dataclass
class GcReport:
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept_blobs: int = 0
    removed_tmp: int = 0
    removed_materialized: int = 0


def entry_json(e: Entry) -> dict[str, Any]:
    d = asdict(e)
    # keep manifests small: drop defaults
    for key, default in (("xattrs", {}), ("size", 0), ("chunks", []), ("target", None), ("rdev", 0)):
        if d[key] == default:
            del d[key]
    return d


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
