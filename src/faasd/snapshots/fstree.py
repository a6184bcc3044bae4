"""Low-level helpers for walking and recreating directory trees exactly (modes, owners, xattrs, devices).

Overlay uppers carry meaning in things most copy tools drop: a whiteout is a character device 0/0,
an opaque directory has the xattr ``trusted.overlay.opaque=y`` (``user.overlay.opaque`` with the
``userxattr`` mount option). These helpers keep all of that.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
# Overlay bookkeeping that refers to inodes of the original lower/upper filesystems; meaningless
# (and potentially confusing for overlayfs) once the tree is copied somewhere else.
VOLATILE_XATTRS = frozenset(
    {
        "trusted.overlay.origin",
        "trusted.overlay.impure",
        "trusted.overlay.nlink",
        "trusted.overlay.uuid",
        "user.overlay.origin",
        "user.overlay.impure",
        "user.overlay.nlink",
        "user.overlay.uuid",
    }
)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def read_xattrs(path: Path) -> dict[str, bytes]:
    """All xattrs of ``path`` (not following symlinks), minus overlay bookkeeping tied to inodes."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out: dict[str, bytes] = {}
    for name in names:
        if name in VOLATILE_XATTRS:
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                continue
            raise
    return out


def is_opaque(path: Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) in (b"y", b"Y"):
                return True
        except OSError:
            continue
    return False


def walk(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield ``(relative posix path, absolute path, lstat)`` for everything below ``root``.

    Parents before their children, never follows symlinks (order otherwise unspecified: use
    :func:`walk_sorted` for a deterministic order).
    """
    stack = [""]
    while stack:
        rel = stack.pop()
        base = root / rel if rel else root
        with os.scandir(base) as it:
            names = sorted((e.name for e in it), reverse=True)
        for name in names:
            child_rel = f"{rel}/{name}" if rel else name
            child = base / name
            st = child.lstat()
            yield child_rel, child, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(child_rel)


def walk_sorted(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Like :func:`walk` but fully sorted by path components (deterministic manifests)."""
    items = list(walk(root))
    items.sort(key=lambda t: t[0].split("/"))
    return items


def apply_metadata(
    path: Path, mode: int, uid: int, gid: int, xattrs: dict[str, bytes], mtime_ns: int | None, is_link: bool
) -> None:
    """Set owner, xattrs, mode and mtime on ``path`` (in an order that does not undo itself)."""
    try:
        os.lchown(path, uid, gid)
    except PermissionError:
        if os.geteuid() == 0:
            raise
    for name, value in xattrs.items():
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            # trusted.* needs CAP_SYS_ADMIN; unprivileged copies keep what they can.
            if exc.errno not in (errno.EPERM, errno.ENOTSUP):
                raise
    if not is_link:
        os.chmod(path, stat.S_IMODE(mode))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
