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
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from faasd.content.store import raise_storage
from faasd.errors import InvalidInputError, RuntimeFailure
from faasd.images import compression

WhiteoutMode = Literal["overlay", "flat"]
WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds applied to every layer; defaults suit real images (a few GiB, ~10^5 files)."""

    max_bytes: int = 8 * 1024**3
    """Total uncompressed bytes per layer (tar stream and sum of member sizes, sparse expanded)."""
    max_entries: int = 500_000
    max_ratio: float = 200.0
    """Uncompressed/compressed ratio allowed once ``ratio_grace_bytes`` were produced."""
    ratio_grace_bytes: int = 128 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024
    """Largest single PAX / GNU long-name header block."""
    max_path_bytes: int = 4096
    max_name_bytes: int = 255
    devices: Literal["reject", "skip"] = "reject"


@dataclass
class UnpackReport:
    diff_id: str = ""
    entries: int = 0
    bytes: int = 0
    """Sum of regular file sizes written."""
    compression: str = "none"
    compressed_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(entry name, reason) for entries deliberately not extracted."""
    duplicates: int = 0


def _bad(name: str, reason: str) -> InvalidInputError:
    return InvalidInputError(f"refusing layer entry {name!r}: {reason}", entry=name, reason=reason)


class _TarStream:
    """Forward-only file object fed to ``tarfile.TarFile``: hashes (diff_id) and bounds everything read."""

    def __init__(
        self, src: BinaryIO, limits: ExtractLimits, compressed: Callable[[], int], what: str
    ) -> None:
        self._src = src
        self._limits = limits
        self._compressed = compressed
        self._what = what
        self._hash = hashlib.sha256()
        self.pos = 0
        self.eof = False
        self.name = None  # tarfile looks for .name

    def _account(self, data: bytes) -> None:
        self._hash.update(data)
        self.pos += len(data)
        lim = self._limits
        if self.pos > lim.max_bytes:
            raise InvalidInputError(
                f"{self._what}: more than {lim.max_bytes} uncompressed bytes (size bomb?)", reason="size"
            )
        if self.pos > lim.ratio_grace_bytes:
            comp = max(self._compressed(), 1)
            if self.pos / comp > lim.max_ratio:
                raise InvalidInputError(
                    f"{self._what}: compression ratio above {lim.max_ratio:g}:1 (decompression bomb?)",
                    reason="ratio",
                )

    def _raw_read(self, n: int) -> bytes:
        try:
            data = self._src.read(n)
            if n and not data:
                self.eof = True
            return data
        except compression.DECOMPRESSION_ERRORS as exc:
            raise compression.decompression_error(exc, self._what) from None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > max(self._limits.max_header_bytes, _CHUNK):
            raise InvalidInputError(
                f"{self._what}: tar header or read of {n} bytes exceeds the "
                f"{self._limits.max_header_bytes}-byte header limit",
                reason="header",
            )
        out = bytearray()
        while len(out) < n:
            data = self._raw_read(n - len(out))
            if not data:
                break
            out += data
        self._account(bytes(out))
        return bytes(out)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.pos
        elif whence != 0:
            raise OSError(errno.ESPIPE, "layer streams are not seekable from the end")
        if offset < self.pos:
            raise InvalidInputError(f"{self._what}: tar needs a backward seek (malformed archive)")
        while self.pos < offset:
            chunk = self._raw_read(min(_CHUNK, offset - self.pos))
            if not chunk:
                break
            self._account(chunk)
        return self.pos

    def drain(self) -> None:
        while True:
            chunk = self._raw_read(_CHUNK)
            if not chunk:
                return
            self._account(chunk)

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def normalize_name(name: str, limits: ExtractLimits) -> tuple[str, ...]:
    """Split a tar member name into safe components; raise on ``..``, NUL, or over-long names."""
    if "\x00" in name:
        raise _bad(name, "name contains a NUL byte")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > limits.max_path_bytes:
        raise _bad(name[:80] + "...", f"name longer than {limits.max_path_bytes} bytes")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise _bad(name, "'..' path component (path traversal)")
        if len(comp.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
            raise _bad(name[:80] + "...", f"a path component is longer than {limits.max_name_bytes} bytes")
        parts.append(comp)
    return tuple(parts)


def _is_whiteout_dev(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class LayerExtractor:
    """Extracts one layer tar stream into ``dest`` (see module docstring)."""

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
