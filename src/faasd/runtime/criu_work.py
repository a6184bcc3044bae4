"""CRIU work dirs (logs; a failed or killed CRIU can leave its cgroup yard mounted in one), made so that a
crash's leftovers can be told from a live operation's.

``<run_dir>/criu-work/<sandbox-id>-<n>/`` during a restore, ``<bundle>/criu-dump-<pid>-<n>/`` during a
dump (:mod:`faasd.runtime.checkpoint`). The operation holds an exclusive ``flock`` on the directory itself
while it uses it (it is created as ``.new-<name>``, locked, then renamed, so it never appears unlocked
under its name), so :func:`remove_stale_work_dirs` (called by ``SandboxManager.cleanup_orphans``) can tell
the work dir of a live operation (locked) from one a crashed daemon left behind (unlocked: unmounted and
removed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from faasd.filelock import flock
from faasd.rootfs import mounts

DUMP_WORK_PREFIX = "criu-dump-"
RESTORE_WORK_DIR = "criu-work"


_NEW_PREFIX = ".new-"
_NEW_GRACE_S = 600.0
"""A ``.new-*`` dir (created, not yet locked and renamed) older than this was left by a crash."""


def read_log(path: Path) -> str:
    """A CRIU log (empty when there is none to read)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def log_tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, for an error message."""
    return "\n".join(text.splitlines()[-lines:])


def make_work_dir(work: Path) -> int:
    """Create the CRIU work dir ``work`` (must not exist) locked by an exclusive ``flock`` on the
    directory for the duration of one operation. Returns the fd holding the lock (released by
    :func:`remove_work_dir`).

    The directory is created as ``.new-<name>``, locked, then renamed: under its real name it is never
    unlocked while the operation lives, so :func:`remove_stale_work_dirs` cannot take it."""
    work.parent.mkdir(parents=True, exist_ok=True)
    tmp = work.parent / f"{_NEW_PREFIX}{work.name}"
    tmp.mkdir()
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flock(fd)
        os.rename(tmp, work)
    except BaseException:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fd


def remove_work_dir(work: Path, fd: int | None = None) -> None:
    """Remove a CRIU work dir, unmounting first what CRIU may have left mounted in it; then release
    its lock (``fd`` from :func:`make_work_dir`).

    A failed or killed restore can leave CRIU's cgroup yard (``.criu.cgyard.*``) mounted there;
    removing the directory alone would leak those mounts (and deleting through a mount would empty
    the mounted filesystem), so the tree is only removed once nothing is mounted below it.
    A work dir holding only files (every successful operation's: CRIU mounts nothing there when faasd
    gives it a cgroup yard) is removed without reading the host's mount table.
    """
    try:
        if _remove_flat(work):
            return
        failed = mounts.unmount_all_under(work)
        if not failed and not mounts.mounts_under(work):
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if fd is not None:
            os.close(fd)


def _remove_flat(work: Path) -> bool:
    """Remove ``work`` if it holds nothing but files and symlinks (nothing can be mounted in it then);
    False, leaving it as it was, if it holds a directory (or is gone)."""
    try:
        with os.scandir(work) as it:
            entries = list(it)
        if any(e.is_dir(follow_symlinks=False) for e in entries):
            return False
        for e in entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
        os.rmdir(work)
    except OSError:
        return False
    return True


def _lock_if_free(work: Path) -> int | None:
    """An fd of ``work`` holding its lock, or None when it is gone or a live operation holds the lock."""
    try:
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not flock(fd, blocking=False) or not _still_named(fd, work):
        os.close(fd)
        return None
    return fd


def _still_named(fd: int, work: Path) -> bool:
    """Whether ``fd`` (opened from ``work``) is still the directory at ``work``: its owner may have
    removed it and released the lock between the open and the ``flock``, and a removal by the owner is
    not a crash's leftover."""
    try:
        st, now = os.fstat(fd), os.lstat(work)
    except OSError:
        return False
    return st.st_nlink > 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def work_dir_locked(work: Path) -> bool:
    """Whether a live operation holds the lock of work dir ``work`` (see :func:`make_work_dir`)."""
    fd = _lock_if_free(work)
    if fd is None:
        return os.path.lexists(work)
    os.close(fd)
    return False


def _work_dir_candidates(run_dir: Path, sandboxes_dir: Path) -> list[Path]:
    """CRIU work dirs under ``run_dir`` (restores) and sandbox bundles (dumps), locked or not."""
    candidates: list[Path] = []

    def scan(parent: Path, prefix: str) -> None:
        with contextlib.suppress(OSError):
            for p in parent.iterdir():
                if p.name.startswith(prefix):
                    candidates.append(p)
                elif p.name.startswith(_NEW_PREFIX + prefix):
                    # mid-creation (not locked yet) unless it has been there far too long
                    with contextlib.suppress(OSError):
                        if p.lstat().st_mtime < time.time() - _NEW_GRACE_S:
                            candidates.append(p)

    scan(run_dir / RESTORE_WORK_DIR, "fd-")
    if sandboxes_dir.is_dir():
        for bundle in sandboxes_dir.iterdir():
            if bundle.name.startswith("fd-") and bundle.is_dir() and not bundle.is_symlink():
                scan(bundle, DUMP_WORK_PREFIX)
    return sorted(p for p in candidates if p.is_dir() and not p.is_symlink())


def remove_stale_work_dirs(run_dir: Path, sandboxes_dir: Path) -> list[Path]:
    """Unmount and remove every CRIU work dir a crashed or killed operation left behind (those no
    live operation holds the lock of). Returns the dirs removed."""
    removed: list[Path] = []
    for work in _work_dir_candidates(run_dir, sandboxes_dir):
        fd = _lock_if_free(work)
        if fd is None:
            continue  # gone, or a live operation's
        remove_work_dir(work, fd)  # removed while holding its lock
        if not os.path.lexists(work):
            removed.append(work)
    return removed
