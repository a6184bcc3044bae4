"""Content-addressed, zstd-compressed, deduplicated snapshot storage.

A snapshot is a set of directory trees captured at one instant -- ``criu`` (the CRIU image dir),
``upper`` (the sandbox's overlay upper dir) and ``bundle`` (the runc ``config.json`` it ran with) --
plus metadata. On disk (under ``settings.snapshots_dir``)::

    blobs/sha256/<aa>/<hex>      zstd frame of one chunk (<= 4 MiB) of file content, named by the
                                 sha256 of the *uncompressed* chunk: identical content is stored once,
                                 across files and across snapshots (e.g. unchanged pages-*.img)
    manifests/<snapshot-id>.json the snapshot: metadata + for each tree a list of entries
                                 (path, type, mode, uid, gid, mtime, xattrs, chunk digests, ...)
    tmp/                         staging for blobs, manifests and checkpoints (same fs: atomic rename)
    mnt/<snapshot-id>/           the snapshot written back once (criu/, upper/, bundle/), shared read-only;
                                 unpacked from the blobs, its criu/ goes to memory instead when it fits
                                 (:mod:`faasd.snapshots.image_cache`)
                                 (a snapshot created from trees staged in tmp/ -- a checkpoint -- adopts
                                 them here by rename: it is hot at once, no unpacking before a restore)
                                 by every sandbox restored from it (its upper is an overlay lower);
                                 .leases/ names the sandbox bundles using it, so gc keeps it for them
    .lock                        flock: creates/deletes take it shared, gc takes it exclusive

A snapshot exists exactly when its manifest exists. ``create`` writes blobs first and the
manifest last (fsync + rename), so a failure -- including ENOSPC, reported as
:class:`~faasd.errors.StorageFullError` -- never registers a half snapshot; blobs it wrote are
removed again unless another snapshot already references them.

The manifest's data model is :mod:`faasd.snapshots.manifest`, chunking/compression/dedup of file
content :mod:`faasd.snapshots.blobs`; this module is the store: ids, locking, create/read/delete,
gc, materialised copies and their leases.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.errors import ConflictError, FaasdError, InvalidInputError, NotFoundError, StorageFullError
from faasd.filelock import locked_file
from faasd.snapshots.blobs import CHUNK_SIZE, BlobStore, shared_pool
from faasd.snapshots.heads import ManifestHeads
from faasd.snapshots.image_cache import ImageCache
from faasd.snapshots.manifest import (
    MANIFEST_VERSION,
    TREES,
    Entry,
    GcReport,
    MaterializedSnapshot,
    Snapshot,
    SnapshotHead,
    SnapshotMeta,
    SnapshotSizes,
    now,
)

__all__ = [
    "CHUNK_SIZE",
    "MANIFEST_VERSION",
    "TREES",
    "Entry",
    "GcReport",
    "MaterializedSnapshot",
    "Snapshot",
    "SnapshotHead",
    "SnapshotMeta",
    "SnapshotSizes",
    "SnapshotStore",
]

_ID_PREFIX = "snap-"


def _is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class SnapshotStore:
    def __init__(self, settings: Settings | Path, *, level: int = 1, threads: int | None = None) -> None:
        """``level``: zstd level (1 is ~10x faster than 3 on CRIU pages at almost the same ratio).
        ``threads``: a private pool of that size for chunk hashing/compression (default: shared pool)."""
        self.root = settings.snapshots_dir if isinstance(settings, Settings) else Path(settings)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.manifests_dir = self.root / "manifests"
        self.tmp_dir = self.root / "tmp"
        self.mnt_dir = self.root / "mnt"
        for d in (self.blobs_dir, self.manifests_dir, self.tmp_dir, self.mnt_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / ".lock"
        self._heads = ManifestHeads(self.manifests_dir, _ID_PREFIX)
        pool = shared_pool() if threads is None else ThreadPoolExecutor(max_workers=threads)
        self.blobs = BlobStore(self.blobs_dir, self.tmp_dir, level=level, pool=pool)
        if isinstance(settings, Settings):
            budget = settings.snapshot_image_cache_mb * 1024 * 1024
            self.image_cache = ImageCache(settings.image_cache_dir, budget, settings.data_dir)
        else:  # a bare directory (tests, tools): everything on its disk
            self.image_cache = ImageCache(self.root, 0, self.root)
        self.image_cache.sweep()

    # ------------------------------------------------------------------ locking / paths
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        with locked_file(self._lock_path, shared=not exclusive):
            yield

    def blob_path(self, digest: str) -> Path:
        return self.blobs.blob_path(digest)

    def _manifest_path(self, snapshot_id: str) -> Path:
        if not snapshot_id.startswith(_ID_PREFIX) or "/" in snapshot_id or snapshot_id in (".", ".."):
            raise NotFoundError(f"snapshot {snapshot_id!r} does not exist (ids look like 'snap-<hex>')")
        return self.manifests_dir / f"{snapshot_id}.json"

    def staging_dir(self, prefix: str = "stage") -> Path:
        """A fresh directory on the store's filesystem (for checkpoints before they are ingested)."""
        d = self.tmp_dir / f"{prefix}-{uuid.uuid4().hex[:12]}"
        d.mkdir(parents=True)
        return d

    # ------------------------------------------------------------------ create
    def create(
        self, trees: dict[str, Path], meta: SnapshotMeta | None = None, snapshot_id: str | None = None
    ) -> Snapshot:
        """Ingest directory trees (keys from ``criu``, ``upper``, ``bundle``) as a new snapshot."""
        meta = meta or SnapshotMeta()
        unknown = set(trees) - set(TREES)
        if unknown:
            raise InvalidInputError(f"unknown snapshot tree(s) {sorted(unknown)}; use {list(TREES)}")
        for name, path in trees.items():
            if not path.is_dir():
                raise InvalidInputError(f"snapshot tree {name!r}: {path} is not a directory")
        if meta.parent is not None:
            self.get(meta.parent)  # must exist
        sid = snapshot_id or f"{_ID_PREFIX}{uuid.uuid4().hex[:16]}"
        manifest_path = self._manifest_path(sid)
        written: builtins.list[Path] = []
        sizes = SnapshotSizes()
        with self._locked(exclusive=False):
            if manifest_path.exists():
                raise FaasdError(f"snapshot {sid} already exists")
            try:
                entries = {name: self.blobs.ingest_tree(path, written, sizes) for name, path in trees.items()}
                snap = Snapshot(id=sid, created=now(), meta=meta, trees=entries, sizes=sizes)
                digests = snap.digests()
                sizes.chunks = len(digests)
                sizes.stored_bytes = sum(self.blob_path(d).stat().st_size for d in digests)
                self._write_json_atomic(manifest_path, snap.to_json())
            except BaseException as exc:
                self._rollback(written)
                if _is_enospc(exc):
                    raise StorageFullError(
                        f"no space left in {self.root} while storing snapshot {sid}; nothing was "
                        "registered. Free space (delete snapshots and run gc) or enlarge the data dir.",
                        snapshot=sid,
                    ) from exc
                raise
            self._adopt(sid, trees)
        return snap

    def _adopt(self, snapshot_id: str, trees: dict[str, Path]) -> None:
        """Keep trees staged in this store's ``tmp/`` (a checkpoint) as the snapshot's materialised
        copy ``mnt/<id>/``: a rename instead of unpacking the blobs again at the first restore, so a
        fresh snapshot is hot at once. Trees staged elsewhere are left alone (they are the caller's)."""
        tmp_root = self.tmp_dir.resolve()
        if not trees or any(not Path(p).resolve().is_relative_to(tmp_root) for p in trees.values()):
            return
        final = self.mnt_dir / snapshot_id
        if final.exists():
            return
        tmp = self.tmp_dir / f"mnt-{snapshot_id}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            for name, path in trees.items():
                os.rename(path, tmp / name)
            (tmp / ".complete").write_text(now())
            os.rename(tmp, final)
        except OSError:
            pass  # not adopted: the first restore materialises it from the blobs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _rollback(self, written: builtins.list[Path]) -> None:
        # Blobs created by this call may already be referenced by a concurrent create (they hold the
        # shared lock too), so only remove what no manifest mentions.
        if not written:
            return
        referenced = self._referenced_digests()
        for p in written:
            if p.name not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def _write_json_atomic(self, dest: Path, data: dict[str, Any]) -> None:
        tmp = self.tmp_dir / f"manifest-{uuid.uuid4().hex}"
        try:
            with open(tmp, "x") as f:
                json.dump(data, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # ------------------------------------------------------------------ read
    def get(self, snapshot_id: str) -> Snapshot:
        path = self._manifest_path(snapshot_id)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise _not_found(snapshot_id) from None
        return Snapshot.from_json(data)

    inspect = get

    def list(self) -> builtins.list[Snapshot]:
        out: builtins.list[Snapshot] = []
        for p in self.manifests_dir.glob(f"{_ID_PREFIX}*.json"):
            with contextlib.suppress(FileNotFoundError):
                out.append(Snapshot.from_json(json.loads(p.read_text())))
        out.sort(key=lambda s: s.created)
        return out

    def heads(self) -> builtins.list[SnapshotHead]:
        """Every snapshot without its file trees, oldest first (cheap: :mod:`faasd.snapshots.heads`)."""
        return self._heads.list()

    def head(self, snapshot_id: str) -> SnapshotHead:
        """One snapshot without its file trees (read once: :mod:`faasd.snapshots.heads`)."""
        path = self._manifest_path(snapshot_id)
        head = self._heads.get(path.name)
        if head is None:
            raise _not_found(snapshot_id)
        return head

    def children(
        self, snapshot_id: str, heads: Sequence[SnapshotHead] | None = None
    ) -> builtins.list[SnapshotHead]:
        """The snapshots whose parent is ``snapshot_id`` (their heads: every caller wants their ids);
        ``heads``: the store's, when the caller has them (a listing)."""
        return [h for h in (self.heads() if heads is None else heads) if h.meta.parent == snapshot_id]

    def chain(self, snapshot_id: str) -> builtins.list[Snapshot]:
        """The snapshot and its ancestors, root first (the order of their uppers as overlay lowers)."""
        out: builtins.list[Snapshot] = []
        seen: set[str] = set()
        cur: str | None = snapshot_id
        while cur is not None:
            if cur in seen:
                raise FaasdError(f"snapshot parent cycle at {cur}")
            seen.add(cur)
            snap = self.get(cur)
            out.append(snap)
            cur = snap.meta.parent
        out.reverse()
        return out

    def delete(self, snapshot_id: str, *, force: bool = False) -> None:
        """Remove a snapshot's manifest (blobs go at the next :meth:`gc`).

        Refuses while another snapshot names it as parent, unless ``force``.
        """
        path = self._manifest_path(snapshot_id)
        with self._locked(exclusive=False):
            if not path.exists():
                raise NotFoundError(f"snapshot {snapshot_id} does not exist")
            kids = [s.id for s in self.children(snapshot_id)]
            if kids and not force:
                raise ConflictError(
                    f"snapshot {snapshot_id} is the parent of {kids}; delete those first or pass force",
                    children=kids,
                )
            path.unlink()
        self.image_cache.drop(snapshot_id)  # its memory goes back now (if a restore pins it: at gc)

    # ------------------------------------------------------------------ gc
    def _referenced_digests(self) -> set[str]:
        refs: set[str] = set()
        for snap in self.list():
            refs |= {d.removeprefix("sha256:") for d in snap.digests()}
        return refs

    def gc(self) -> GcReport:
        """Delete blobs no manifest references and stale staging files."""
        report = GcReport()
        with self._locked(exclusive=True):
            referenced = self._referenced_digests()
            for sub in self.blobs_dir.iterdir():
                for blob in sub.iterdir():
                    if blob.name in referenced:
                        report.kept_blobs += 1
                        continue
                    report.freed_bytes += blob.stat().st_size
                    blob.unlink()
                    report.removed_blobs += 1
                with contextlib.suppress(OSError):
                    sub.rmdir()
            live = {p.stem for p in self.manifests_dir.glob(f"{_ID_PREFIX}*.json")}
            for d in self.mnt_dir.iterdir():
                if d.name not in live and not self._in_use(d):
                    shutil.rmtree(d, ignore_errors=True)
                    report.removed_materialized += 1
            report.removed_materialized += self.image_cache.drop_unless(lambda sid: sid in live)
            # Nothing can be mid-create while we hold the exclusive lock, except checkpoints staging
            # into tmp/ without the lock: leave stage dirs younger than an hour alone.
            for p in self.tmp_dir.iterdir():
                if p.name.startswith(("blob-", "manifest-")) or p.lstat().st_mtime < time.time() - 3600:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    report.removed_tmp += 1
        return report

    def disk_usage(self) -> int:
        return sum(b.stat().st_size for sub in self.blobs_dir.iterdir() for b in sub.iterdir())

    # ------------------------------------------------------------------ materialise
    def materialize(
        self, snapshot_id: str, dest: Path, trees: tuple[str, ...] = TREES
    ) -> MaterializedSnapshot:
        """Write a snapshot's trees back as ``dest/<tree>`` directories (exact metadata, whiteouts)."""
        snap = self.get(snapshot_id)
        dest.mkdir(parents=True, exist_ok=True)
        out = MaterializedSnapshot(root=dest, criu=None, upper=None, bundle=None)
        try:
            for name in trees:
                if name not in snap.trees:
                    continue
                target = dest / name
                self.blobs.write_tree(snap.trees[name], target)
                setattr(out, name, target)
        except OSError as exc:
            if _is_enospc(exc):
                raise StorageFullError(f"no space left writing snapshot {snapshot_id} to {dest}") from exc
            raise
        return out

    def materialized(self, snapshot_id: str) -> MaterializedSnapshot:
        """The snapshot's trees, written once and shared read-only: ``mnt/<id>/``, except its process
        image (``criu``), which a restore from the store unpacks into memory (:attr:`image_cache`) when
        it fits there.

        Restores use ``upper`` as a read-only overlay lower, so any number of branches share one copy.
        A restore keeps the process image from eviction with :meth:`process_image`.
        """
        snap = self.get(snapshot_id)
        final = self.mnt_dir / snapshot_id
        cached = self.image_cache.enabled and "criu" in snap.trees
        if not (final / ".complete").exists():
            with self._locked(exclusive=False):
                if not (final / ".complete").exists():
                    trees = tuple(t for t in TREES if not (cached and t == "criu"))
                    self._write_back(snapshot_id, trees, final)
        out = MaterializedSnapshot(
            root=final, **{t: (final / t if (final / t).is_dir() else None) for t in TREES}
        )
        if out.criu is None and "criu" in snap.trees:
            out.criu = self._unpack_image(snap)
        return out

    def _write_back(
        self, snapshot_id: str, trees: tuple[str, ...], dest: Path, *, tree: str | None = None
    ) -> None:
        """Unpack ``trees`` of a snapshot into a fresh dir of ``tmp/`` and rename it to ``dest``, marked
        ``.complete`` (with ``tree``: only that tree's dir, unmarked). Losing a race to the same ``dest``
        keeps the winner's copy."""
        tmp = self.tmp_dir / f"mnt-{snapshot_id}-{uuid.uuid4().hex[:8]}"
        try:
            self.materialize(snapshot_id, tmp, trees)
            if tree is None:
                (tmp / ".complete").write_text(now())
            try:
                os.rename(tmp if tree is None else tmp / tree, dest)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _unpack_image(self, snap: Snapshot) -> Path:
        """The process image of ``snap``, from the memory cache, unpacked into it, or (when it does not
        fit there) unpacked to ``mnt/<id>/criu`` on disk."""
        hit = self.image_cache.get(snap.id)
        if hit is not None:
            return hit
        entries = snap.trees["criu"]
        size = sum(e.size for e in entries if e.type == "file")
        try:
            filled = self.image_cache.fill(snap.id, size, lambda dest: self.blobs.write_tree(entries, dest))
        except OSError as exc:
            raise FaasdError(
                f"unpacking the process image of snapshot {snap.id} into memory failed: {exc}"
            ) from exc
        if filled is not None:
            return filled
        on_disk = self.mnt_dir / snap.id / "criu"
        with self._locked(exclusive=False):
            if not on_disk.is_dir():
                self._write_back(snap.id, ("criu",), on_disk, tree="criu")
        return on_disk

    @contextlib.contextmanager
    def process_image(self, snapshot_id: str) -> Iterator[Path]:
        """The process image (``criu`` tree) of a snapshot, kept where it is until the block ends (a
        restore reads it: the memory cache must not evict it meanwhile). Blocking."""
        for _ in range(5):
            criu = self.materialized(snapshot_id).criu
            if criu is None:
                raise InvalidInputError(f"snapshot {snapshot_id} has no process image")
            if not self.image_cache.holds(criu):
                yield criu
                return
            with self.image_cache.pinned(snapshot_id) as held:
                if held:
                    yield criu
                    return
        raise FaasdError(
            f"the process image of snapshot {snapshot_id} was evicted from memory again and again "
            "before a restore could read it; raise snapshot_image_cache_mb"
        )

    def evict(self, snapshot_id: str) -> bool:
        """Drop the materialised copy ``mnt/<id>/`` of a snapshot and its process image in memory (its
        blobs stay: the next restore unpacks it again). Refused (False) while a sandbox uses it or a
        restore reads its image. Returns whether it was removed."""
        final = self.mnt_dir / snapshot_id
        if not self.image_cache.drop(snapshot_id):
            return False
        with self._locked(exclusive=True):
            if not final.exists() or self._in_use(final):
                return False
            tmp = self.tmp_dir / f"evict-{snapshot_id}-{uuid.uuid4().hex[:8]}"
            os.rename(final, tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def snapshot_of_lower(self, lower: Path) -> str | None:
        """If ``lower`` is a materialised snapshot upper of this store, that snapshot's id."""
        try:
            rel = Path(lower).resolve().relative_to(self.mnt_dir.resolve())
        except ValueError:
            return None
        parts = rel.parts
        return parts[0] if len(parts) == 2 and parts[1] == "upper" else None

    def lease(self, snapshot_id: str, holder: Path) -> MaterializedSnapshot:
        """Record that ``holder`` (e.g. a sandbox bundle dir) uses the materialised trees of
        ``snapshot_id`` (as overlay lowers), and return them. :meth:`gc` keeps them while ``holder``
        exists, even after the snapshot was deleted."""
        mat = self.materialized(snapshot_id)
        leases = mat.root / ".leases"
        leases.mkdir(exist_ok=True)
        name = hashlib.sha256(str(holder).encode()).hexdigest()[:32]
        (leases / name).write_text(str(holder))
        return mat

    def _in_use(self, path: Path) -> bool:
        leases = path / ".leases"
        if leases.is_dir():
            for lease in leases.iterdir():
                with contextlib.suppress(OSError):
                    if Path(lease.read_text()).exists():
                        return True
        try:
            text = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return True
        return str(path) in text


def _not_found(snapshot_id: str) -> NotFoundError:
    return NotFoundError(f"snapshot {snapshot_id} does not exist; list snapshots to see ids")
