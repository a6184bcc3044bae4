"""Snapshots' process images (their CRIU image trees) unpacked into memory, within a budget.

A restore from the store first writes the snapshot's files back. The process image -- CRIU's pages,
cores, file tables -- is most of those bytes, and CRIU reads it once per restore. Written to the data
dir's disk, that unpacking waits on the disk (its journal and writeback, shared with every other
writer), so :class:`ImageCache` keeps the unpacked process images on a tmpfs instead, by default a
directory under ``/dev/shm`` (``Settings.snapshot_image_cache_dir``), up to
``Settings.snapshot_image_cache_mb``. Filesystem trees (a snapshot's ``upper``, which can be large
and is an overlay lower as long as a restored sandbox runs) stay on disk.

Layout::

    <snapshot-id>/criu/      the unpacked image tree
    <snapshot-id>/.complete  its size in bytes; its mtime is its last use (least recently used goes first)
    tmp/                     entries being written, renamed into place once complete
    restores/                per-restore image dirs the runtime makes next to the images (hard links)
    .data_dir                the data dir this cache belongs to (:func:`sweep_orphans`)

An entry in use by a restore is *pinned* (a shared ``flock`` on its ``.complete``); eviction takes the
lock exclusively without waiting and skips pinned entries. When an image does not fit the budget even
after evicting every unpinned entry, or the tmpfs is full, :meth:`ImageCache.fill` returns None and
the store unpacks that image to disk as before. The cache holds nothing that is not also in the store:
it is emptied when the daemon stops and after a reboot, and refilled on demand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from faasd.rootfs import mounts
from faasd.runtime.sandbox.userns_setup import RESTORES_SUBDIR

log = logging.getLogger(__name__)
_COMPLETE = ".complete"
_DATA_DIR = ".data_dir"
ORPHAN_PREFIX = "faasd-snapimg-"
"""Name prefix of default cache dirs (``/dev/shm/faasd-snapimg-<hash of the data dir>``)."""
_STALE_S = 3600.0


def is_tmpfs(path: Path) -> bool:
    """Whether ``path`` (or the nearest existing parent) is on a tmpfs."""
    return mounts.fstype_of(path) == "tmpfs"


class ImageCache:
    """Unpacked process images of snapshots under ``root`` (a tmpfs), at most ``budget_bytes`` of them.

    ``enabled`` is False (every method then declines or does nothing) when the budget is 0 or ``root`` is
    not on a tmpfs."""

    def __init__(self, root: Path, budget_bytes: int, data_dir: Path) -> None:
        self.root = Path(root)
        self.budget_bytes = max(0, budget_bytes)
        self.enabled = self.budget_bytes > 0 and is_tmpfs(self.root)
        self.tmp_dir = self.root / "tmp"
        self._data_dir = str(Path(data_dir).resolve())
        if self.enabled and not self._ensure_dirs():
            self.enabled = False

    def _ensure_dirs(self) -> bool:
        """Make the cache dir (0700); False (with a warning) when the path exists and is not a directory
        of this user: e.g. made beforehand by another user of the world-writable ``/dev/shm`` to read the
        images (the memory of sandboxes) or to swap them."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.root.mkdir(mode=0o700)
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            log.warning(
                "%s exists and is not a directory of uid %d: snapshot process images are unpacked to "
                "disk instead of into memory (remove it, or set snapshot_image_cache_dir)",
                self.root,
                os.geteuid(),
            )
            return False
        os.chmod(self.root, 0o700)
        self.tmp_dir.mkdir(exist_ok=True)
        marker = self.root / _DATA_DIR
        if not marker.exists():
            marker.write_text(self._data_dir)
        return True

    def _entry(self, snapshot_id: str) -> Path:
        return self.root / snapshot_id

    def holds(self, path: Path) -> bool:
        """Whether ``path`` lies inside this cache."""
        return self.enabled and Path(path).is_relative_to(self.root)

    # ------------------------------------------------------------------ lookup / fill
    def get(self, snapshot_id: str) -> Path | None:
        """The unpacked image tree of ``snapshot_id`` if the cache holds it (marked as just used)."""
        if not self.enabled:
            return None
        done = self._entry(snapshot_id) / _COMPLETE
        try:
            os.utime(done)
        except FileNotFoundError:
            return None
        return done.parent / "criu"

    def fill(self, snapshot_id: str, size: int, write: Callable[[Path], None]) -> Path | None:
        """Unpack an image of ``size`` bytes with ``write(dest)`` (``dest`` does not exist yet) into the
        cache and return its path; None when it does not fit (budget, or the tmpfs is full): nothing is
        left behind then. Least recently used, unpinned entries are evicted to make room."""
        if not self.enabled or size > self.budget_bytes:
            return None
        if not self._make_room(size, keep=snapshot_id):
            return None
        if not self._ensure_dirs():
            return None
        tmp = self.tmp_dir / f"{snapshot_id}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            write(tmp / "criu")
            (tmp / _COMPLETE).write_text(str(size))
            try:
                os.rename(tmp, self._entry(snapshot_id))
            except OSError as exc:  # another restore filled it meanwhile: use that one
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
                return None
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get(snapshot_id)

    def entries(self) -> list[tuple[float, str, int]]:
        """``(last use, snapshot id, bytes)`` of every complete entry, least recently used first."""
        return entries_in(self.root) if self.enabled else []

    def used_bytes(self) -> int:
        return sum(size for _, _, size in self.entries())

    def _make_room(self, size: int, *, keep: str) -> bool:
        entries = self.entries()
        used = sum(n for _, _, n in entries)
        for _, sid, n in entries:
            if used + size <= self.budget_bytes:
                break
            if sid != keep and self.drop(sid):
                used -= n
        return used + size <= self.budget_bytes

    # ------------------------------------------------------------------ pins / eviction
    @contextlib.contextmanager
    def pinned(self, snapshot_id: str) -> Iterator[bool]:
        """Keep the entry of ``snapshot_id`` from eviction while the block runs; yields False (and pins
        nothing) when the cache no longer holds it."""
        try:
            fd = os.open(self._entry(snapshot_id) / _COMPLETE, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while an eviction of this entry runs
            yield os.fstat(fd).st_nlink > 0  # an eviction that won the race removed it
        finally:
            os.close(fd)

    def drop(self, snapshot_id: str) -> bool:
        """Evict the entry of ``snapshot_id``; False while a restore pins it (True if absent)."""
        if not self.enabled:
            return True
        entry = self._entry(snapshot_id)
        try:
            fd = os.open(entry / _COMPLETE, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            gone = self.tmp_dir / f"evict-{snapshot_id}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(entry, gone)
            except FileNotFoundError:
                return True
            # unlinked before the lock is released: a pin that waited sees st_nlink == 0
            (gone / _COMPLETE).unlink()
            shutil.rmtree(gone, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def drop_unless(self, keep: Callable[[str], bool]) -> int:
        """Evict every unpinned entry whose snapshot id ``keep`` rejects; returns how many went."""
        return sum(1 for _, sid, _ in self.entries() if not keep(sid) and self.drop(sid))

    def clear(self) -> None:
        """Evict every unpinned entry and the work dirs, and remove the cache dir once nothing is pinned
        (the daemon stops; memory goes back). A later fill makes the dir again."""
        if not self.enabled:
            return
        self.drop_unless(lambda _: False)
        self.sweep(max_age_s=0.0)
        if not self.entries():
            shutil.rmtree(self.root, ignore_errors=True)

    def sweep(self, max_age_s: float = _STALE_S) -> int:
        """Remove work dirs (``tmp/``, ``restores/``) older than ``max_age_s``: left by a crash."""
        removed = 0
        if not self.enabled:
            return removed
        cutoff = time.time() - max_age_s
        for parent in (self.tmp_dir, self.root / RESTORES_SUBDIR):
            with contextlib.suppress(FileNotFoundError):
                for p in parent.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        if p.lstat().st_mtime <= cutoff:
                            shutil.rmtree(p, ignore_errors=True)
                            removed += 1
        return removed


def entries_in(root: Path) -> list[tuple[float, str, int]]:
    """``(last use, snapshot id, bytes)`` of every complete entry of the cache dir ``root`` (none when it
    does not exist), least recently used first."""
    out: list[tuple[float, str, int]] = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        done = d / _COMPLETE
        with contextlib.suppress(OSError, ValueError):
            out.append((done.stat().st_mtime, d.name, int(done.read_text() or 0)))
    out.sort()
    return out


def sweep_orphans(parent: Path = Path("/dev/shm"), *, under: Path | None = None) -> list[Path]:
    """Remove default cache dirs under ``parent`` whose data dir no longer exists (or lies in ``under``,
    e.g. a test session's temporary dirs); returns them."""
    removed: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for d in parent.glob(f"{ORPHAN_PREFIX}*"):
            try:
                data_dir = Path((d / _DATA_DIR).read_text().strip())
            except OSError:
                continue
            if not data_dir.exists() or (under is not None and data_dir.is_relative_to(under.resolve())):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed
