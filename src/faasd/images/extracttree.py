"""The target tree of a layer extraction: directories opened component by component without following
links, the way cleared for a new entry, whiteouts and opaque directories (overlay or flat mode).
See :mod:`faasd.images.extract`."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Literal

from faasd.errors import RuntimeFailure
from faasd.images.tarstream import ExtractLimits, UnpackReport, _bad

WhiteoutMode = Literal["overlay", "flat"]
WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_whiteout_dev(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class ExtractTree:
    """State of one extraction and its tree operations.

    :class:`~faasd.images.extract.LayerExtractor` adds the tar members.
    """

    def __init__(
        self, dest: Path, mode: WhiteoutMode, limits: ExtractLimits | None = None, what: str = "layer"
    ):
        self.dest = Path(dest)
        self.mode = mode
        self.limits = limits or ExtractLimits()
        self.what = what
        self.is_root = os.geteuid() == 0
        self.created: set[tuple[str, ...]] = set()
        self.whiteouts: set[tuple[str, ...]] = set()
        self.opaque: set[tuple[str, ...]] = set()
        self.dir_meta: dict[tuple[str, ...], tarfile.TarInfo] = {}
        self.report = UnpackReport()
        self.total_member_bytes = 0
        self._rootfd = -1
        self._pending_opaque = False

    # --- path handling ------------------------------------------------------------------------
    def _open_dir(self, parts: tuple[str, ...], name: str, create: bool) -> int | None:
        """Open the directory ``parts`` below the root without following links (creating if asked).

        Returns None when ``create`` is False and a component does not exist.
        """
        fd = os.dup(self._rootfd)
        try:
            for i, comp in enumerate(parts):
                sub = parts[: i + 1]
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    self.created.add(sub)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if not create:
                        os.close(fd)
                        return None
                    self._replace_nondir_parent(fd, comp, sub, name)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    def _replace_nondir_parent(self, pfd: int, comp: str, sub: tuple[str, ...], name: str) -> None:
        """A parent component exists but is not a directory (symlink, file, whiteout)."""
        if sub in self.whiteouts:
            # deleted from lower layers, then re-created as a directory: new opaque dir
            os.unlink(comp, dir_fd=pfd)
            self.whiteouts.discard(sub)
            os.mkdir(comp, 0o755, dir_fd=pfd)
            self.created.add(sub)
            self._set_opaque(pfd, comp, sub)
            return
        if self.mode == "flat" and sub not in self.created:
            # a lower layer's non-directory is replaced by a directory (overlayfs semantics)
            os.unlink(comp, dir_fd=pfd)
            os.mkdir(comp, 0o755, dir_fd=pfd)
            self.created.add(sub)
            return
        raise _bad(
            name, f"parent {'/'.join(sub)!r} is a symlink or not a directory; will not write through it"
        )

    def _set_opaque(self, pfd: int, comp: str, sub: tuple[str, ...]) -> None:
        self.opaque.add(sub)
        if self.mode != "overlay":
            return
        fd = os.open(comp, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
        except PermissionError as exc:
            raise RuntimeFailure(
                "marking an opaque directory needs root (CAP_SYS_ADMIN for trusted.* xattrs)"
            ) from exc
        finally:
            os.close(fd)

    def _prepare_leaf(self, pfd: int, leaf: str, parts: tuple[str, ...], new_is_dir: bool) -> bool:
        """Clear the way for a new entry. Returns True if an existing directory is kept (merge)."""
        try:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if parts in self.whiteouts:
            os.unlink(leaf, dir_fd=pfd)
            self.whiteouts.discard(parts)
            if new_is_dir:
                self._pending_opaque = True
            return False
        if stat.S_ISDIR(st.st_mode) and new_is_dir:
            return True
        if parts in self.created:
            self.report.duplicates += 1
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(leaf, dir_fd=pfd)
        else:
            os.unlink(leaf, dir_fd=pfd)
        return False

    def _whiteout(self, name: str, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        dirparts = parts[:-1]
        if base == WH_OPAQUE:
            self._opaque_marker(name, dirparts)
            return
        if base.startswith(WH_PREFIX + WH_PREFIX):
            self.report.skipped.append((name, "unsupported AUFS metadata entry"))
            return
        target = base[len(WH_PREFIX) :]
        if target in ("", ".", ".."):
            raise _bad(name, "invalid whiteout name")
        tparts = (*dirparts, target)
        if tparts in self.created:
            return  # whiteouts only hide lower layers; this layer's own entry wins
        pfd = self._open_dir(dirparts, name, create=self.mode == "overlay")
        if pfd is None:
            return
        try:
            if self.mode == "overlay":
                if tparts in self.whiteouts:
                    return
                try:
                    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
                except PermissionError as exc:
                    raise RuntimeFailure("creating overlay whiteouts needs root (CAP_MKNOD)") from exc
                if self.is_root:
                    os.chown(target, 0, 0, dir_fd=pfd, follow_symlinks=False)
                self.whiteouts.add(tparts)
            else:
                try:
                    st = os.stat(target, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(target, dir_fd=pfd)
                else:
                    os.unlink(target, dir_fd=pfd)
        finally:
            os.close(pfd)

    def _opaque_marker(self, name: str, dirparts: tuple[str, ...]) -> None:
        if not dirparts:
            # an opaque layer root: overlayfs cannot express it on a lowerdir; flat mode clears lower content
            if self.mode == "flat":
                self._clear_lower(self._rootfd, ())
            else:
                self.report.skipped.append((name, "opaque marker on the layer root ignored"))
            return
        pfd = self._open_dir(dirparts[:-1], name, create=self.mode == "overlay")
        if pfd is None:
            return
        try:
            leaf = dirparts[-1]
            if self.mode == "overlay":
                if not self._prepare_leaf(pfd, leaf, dirparts, True):
                    os.mkdir(leaf, 0o755, dir_fd=pfd)
                self.created.add(dirparts)
                self._set_opaque(pfd, leaf, dirparts)
            else:
                self.opaque.add(dirparts)
                try:
                    st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if stat.S_ISDIR(st.st_mode):
                    self._clear_lower(pfd, dirparts)
        finally:
            os.close(pfd)

    def _clear_lower(self, pfd: int, dirparts: tuple[str, ...]) -> None:
        """flat mode: remove everything below ``dirparts`` that did not come from this layer."""
        fd = os.open(dirparts[-1], _DIR_FLAGS, dir_fd=pfd) if dirparts else os.dup(pfd)
        try:
            for entry in os.listdir(fd):
                sub = (*dirparts, entry)
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if sub in self.created:
                    if stat.S_ISDIR(st.st_mode):
                        self._clear_lower(fd, sub)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry, dir_fd=fd)
                else:
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
