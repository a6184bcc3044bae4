"""Merging overlay-style unpacked layer dirs into one plain directory (the flat-copy fallback)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from faasd.images.extracttree import OVERLAY_OPAQUE_XATTR, _is_whiteout_dev


def flatten_layer_dirs(layer_dirs: Iterable[Path], dest: Path) -> None:
    """Merge overlay-style unpacked layer dirs (lowest first) into ``dest`` like overlayfs would show them.

    Char devices 0/0 delete the name; ``trusted.overlay.opaque=y`` hides lower content of a dir.
    Used for the flat-copy fallback when overlayfs is unavailable. Never follows symlinks.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for layer in layer_dirs:
        _merge_dir(Path(layer), dest, {})


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _merge_dir(src: Path, dst: Path, inodes: dict[tuple[int, int], Path]) -> None:
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        s = Path(entry.path)
        d = dst / entry.name
        st = entry.stat(follow_symlinks=False)
        if _is_whiteout_dev(st):
            _remove(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            if d.is_symlink() or (d.exists() and not d.is_dir()) or (d.is_dir() and _is_opaque(s)):
                _remove(d)
            if not d.exists():
                d.mkdir()
            _merge_dir(s, d, inodes)
            with contextlib.suppress(PermissionError):
                os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(d, stat.S_IMODE(st.st_mode))
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            continue
        _remove(d)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            os.link(inodes[key], d, follow_symlinks=False)
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(s, d, follow_symlinks=False)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(d)
        else:
            continue
        with contextlib.suppress(PermissionError):
            os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(d, stat.S_IMODE(st.st_mode))
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        if st.st_nlink > 1:
            inodes[key] = d
