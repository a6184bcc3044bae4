"""Safe, streaming extraction of image layer tarballs.

Nothing here trusts ``tarfile``'s own extraction (or its filters): we read members one by one and
create every file ourselves, relative to an open directory fd, never following a symlink:

* names are normalised: a leading ``/`` or ``./`` is stripped (like Docker does), empty and ``.``
  components are dropped, and any ``..`` component is **rejected**;
* each parent directory is opened component by component with ``O_NOFOLLOW | O_DIRECTORY``, so a
  symlink planted by an earlier entry can never redirect a later write; regular files are created
  with ``O_CREAT | O_EXCL | O_NOFOLLOW``; ownership/mode/times are set through the open fd;
* symlinks are created as links (their target may point anywhere: it is never followed here);
* hard links must point at a regular file (or fifo) created earlier *in the same layer*;
* character/block devices are rejected (or, with ``devices="skip"``, skipped and recorded);
  the only device nodes we create are overlay whiteouts (char 0/0);
* limits: total uncompressed bytes, number of entries, compression ratio, header size, name length.

Whiteouts (``.wh.<name>`` / ``.wh..wh..opq``) only apply to *lower* layers (OCI image spec). Two
modes:

* ``overlay``: the layer dir is an overlayfs lowerdir; a deleted name becomes a char device 0/0 and
  an opaque directory gets ``trusted.overlay.opaque=y``. Needs root (CAP_MKNOD, CAP_SYS_ADMIN).
* ``flat``: layers are applied one after another into the same directory; whiteouts really delete.

A failure raises ``InvalidInputError`` naming the entry and the reason; the caller removes the
(temporary) target directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from faasd.content.store import raise_storage
from faasd.errors import InvalidInputError
from faasd.images import compression
from faasd.images.extracttree import (
    _DIR_FLAGS,
    OVERLAY_OPAQUE_XATTR,
    WH_OPAQUE,
    WH_PREFIX,
    ExtractTree,
    WhiteoutMode,
)
from faasd.images.layermerge import flatten_layer_dirs
from faasd.images.tarstream import _CHUNK, ExtractLimits, UnpackReport, _bad, _TarStream, normalize_name

_ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")


class LayerExtractor(ExtractTree):
    """Extracts one layer tar stream into ``dest`` (see module docstring)."""

    # --- public ----------------------------------------------------------------------------
    def extract(self, blob: BinaryIO, progress: Callable[[int], None] | None = None) -> UnpackReport:
        """Extract a (possibly compressed, seekable) layer blob; returns the report with the diff_id."""
        reader, counter, kind = compression.open_decompressed(blob)
        self.report.compression = kind
        stream = _TarStream(reader, self.limits, lambda: counter.count, self.what)
        self.dest.mkdir(parents=True, exist_ok=True)
        self._rootfd = os.open(self.dest, _DIR_FLAGS)
        try:
            try:
                tf = tarfile.TarFile(fileobj=stream, mode="r")  # type: ignore[arg-type]
            except tarfile.ReadError as exc:
                if stream.pos == 0 or "empty file" in str(exc):
                    tf = None  # an empty layer (0 bytes) is valid
                else:
                    raise InvalidInputError(f"{self.what}: not a tar archive ({exc})") from None
            if tf is not None:
                last = 0
                while True:
                    try:
                        member = tf.next()
                    except tarfile.ReadError as exc:
                        if stream.eof and "unexpected end of data" in str(exc):
                            # only the last member's padding / the end-of-archive blocks are missing
                            # (umoci writes such layers; Go's archive/tar accepts them too)
                            break
                        raise InvalidInputError(f"{self.what}: corrupt tar ({exc})") from None
                    except tarfile.TarError as exc:
                        raise InvalidInputError(f"{self.what}: corrupt tar ({exc})") from None
                    if member is None:
                        break
                    tf.members.clear()  # type: ignore[attr-defined]  # keep memory flat; we never look members up by name
                    try:
                        self._member(tf, member)
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        raise _bad(member.name, f"could not be created ({exc.strerror})") from None
                    if progress is not None and counter.count - last >= _CHUNK:
                        progress(counter.count - last)
                        last = counter.count
                stream.drain()
                if progress is not None:
                    progress(counter.count - last)
            self._finish_dirs()
        except OSError as exc:
            raise_storage(exc, f"{self.what} (unpacking)")
        finally:
            os.close(self._rootfd)
        self.report.diff_id = stream.digest
        self.report.compressed_bytes = counter.count
        return self.report

    # --- members --------------------------------------------------------------------------------
    def _member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        self.report.entries += 1
        if self.report.entries > self.limits.max_entries:
            raise InvalidInputError(
                f"{self.what}: more than {self.limits.max_entries} entries", reason="entries"
            )
        name = m.name
        parts = normalize_name(name, self.limits)
        if m.isreg():
            self.total_member_bytes += m.size
            if self.total_member_bytes > self.limits.max_bytes:
                raise InvalidInputError(
                    f"{self.what}: entry {name!r} brings the layer over {self.limits.max_bytes} bytes "
                    "(size bomb?)",
                    entry=name,
                    reason="size",
                )
        if not parts:
            return  # the layer root itself ("./"): its metadata is not applied
        base = parts[-1]
        if any(c.startswith(WH_PREFIX + WH_PREFIX) for c in parts[:-1]):
            self.report.skipped.append((name, "unsupported AUFS metadata entry"))
            return
        if base.startswith(WH_PREFIX):
            self._whiteout(name, parts)
            return
        if m.ischr() or m.isblk():
            if self.limits.devices == "skip":
                self.report.skipped.append((name, "device node"))
                return
            raise _bad(name, "device nodes are not allowed in image layers")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise _bad(name, f"unsupported tar entry type {m.type!r}")

        pfd = self._open_dir(parts[:-1], name, create=True)
        assert pfd is not None
        try:
            self._pending_opaque = False
            keep_dir = self._prepare_leaf(pfd, base, parts, m.isdir())
            if m.isdir():
                if not keep_dir:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                self.created.add(parts)
                self.dir_meta[parts] = m
                if self._pending_opaque:
                    self._set_opaque(pfd, base, parts)
            elif m.isreg():
                self._regular(tf, m, pfd, base)
                self.created.add(parts)
            elif m.issym():
                target = m.linkname
                if (
                    "\x00" in target
                    or len(target.encode("utf-8", "surrogateescape")) >= self.limits.max_path_bytes
                ):
                    raise _bad(name, "invalid symlink target")
                os.symlink(target, base, dir_fd=pfd)
                self._owner_times(m, base, pfd)
                self.created.add(parts)
            elif m.islnk():
                self._hardlink(m, pfd, base, parts)
                self.created.add(parts)
            else:  # fifo
                os.mkfifo(base, 0o600, dir_fd=pfd)
                self._owner_times(m, base, pfd, chmod=True)
                self.created.add(parts)
        finally:
            os.close(pfd)

    def _regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        src = tf.extractfile(m)
        assert src is not None
        fd = os.open(
            base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd
        )
        try:
            remaining = m.size
            while remaining > 0:
                try:
                    chunk = src.read(min(_CHUNK, remaining))
                except tarfile.ReadError as exc:
                    raise _bad(m.name, f"file data is truncated ({exc})") from None
                if not chunk:
                    raise _bad(m.name, "file data is truncated")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                remaining -= len(chunk)
            self.report.bytes += m.size
            if self.is_root:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears set-id bits
            self._xattrs(m, fd)
            os.utime(fd, ns=(int(m.mtime * 1e9),) * 2)
        finally:
            os.close(fd)

    def _owner_times(self, m: tarfile.TarInfo, base: str, pfd: int, chmod: bool = False) -> None:
        if self.is_root:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:  # only for fifos we just created in a directory fd we hold; never a symlink
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
        with contextlib.suppress(OSError):
            os.utime(base, ns=(int(m.mtime * 1e9),) * 2, dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, m: tarfile.TarInfo, pfd: int, base: str, parts: tuple[str, ...]) -> None:
        tparts = normalize_name(m.linkname, self.limits)
        if not tparts:
            raise _bad(m.name, "hard link to the layer root")
        if tparts not in self.created:
            raise _bad(m.name, f"hard link target {m.linkname!r} is not a file earlier in this layer")
        tpfd = self._open_dir(tparts[:-1], m.name, create=False)
        if tpfd is None:
            raise _bad(m.name, f"hard link target {m.linkname!r} not found")
        try:
            try:
                st = os.stat(tparts[-1], dir_fd=tpfd, follow_symlinks=False)
            except FileNotFoundError:
                raise _bad(m.name, f"hard link target {m.linkname!r} not found") from None
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise _bad(
                    m.name, f"hard link target {m.linkname!r} is not a regular file (symlink/dir/device)"
                )
            if tparts == parts:
                return
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tpfd)

    def _xattrs(self, m: tarfile.TarInfo, fd: int) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            xname = key[len("SCHILY.xattr.") :]
            if not xname.startswith(_ALLOWED_XATTR_PREFIXES):
                self.report.skipped.append((m.name, f"xattr {xname} not applied"))
                continue
            try:
                os.setxattr(fd, xname, value.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                self.report.skipped.append((m.name, f"xattr {xname} failed: {exc.strerror}"))

    def _finish_dirs(self) -> None:
        """Apply directory ownership/mode/mtime last (deepest first), so read-only dirs can be filled."""
        for parts in sorted(self.dir_meta, key=len, reverse=True):
            m = self.dir_meta[parts]
            fd = self._open_dir(parts, m.name, create=False)
            if fd is None:
                continue  # replaced by a later entry
            try:
                if self.is_root:
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode & 0o7777)
                self._xattrs(m, fd)
                os.utime(fd, ns=(int(m.mtime * 1e9),) * 2)
            finally:
                os.close(fd)


def unpack_layer(
    blob: BinaryIO,
    dest: Path,
    mode: WhiteoutMode = "overlay",
    limits: ExtractLimits | None = None,
    what: str = "layer",
    progress: Callable[[int], None] | None = None,
) -> UnpackReport:
    """Extract one layer blob (gzip/zstd/plain tar) into ``dest``. See the module docstring."""
    return LayerExtractor(dest, mode, limits, what).extract(blob, progress)


def apply_layers(
    blobs: Iterable[Path], dest: Path, limits: ExtractLimits | None = None
) -> list[UnpackReport]:
    """Apply layer blobs (lowest first) into one directory; whiteouts delete for real."""
    reports = []
    for i, path in enumerate(blobs):
        with open(path, "rb") as f:
            reports.append(unpack_layer(f, dest, "flat", limits, what=f"layer {i} ({path.name})"))
    return reports


__all__ = [
    "OVERLAY_OPAQUE_XATTR",
    "WH_OPAQUE",
    "WH_PREFIX",
    "ExtractLimits",
    "LayerExtractor",
    "UnpackReport",
    "WhiteoutMode",
    "apply_layers",
    "flatten_layer_dirs",
    "normalize_name",
    "unpack_layer",
]
