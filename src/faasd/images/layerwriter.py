"""Deterministic layer tarballs from directories (the image writer's half of the store).

Entries are emitted in sorted order with PAX headers, empty user/group names, and (optionally)
mtimes clamped to a fixed epoch, so the same directory always yields the same bytes. The gzip
header carries no name and mtime 0. Overlay-style whiteouts found in the source (char device 0/0,
``trusted.overlay.opaque=y``) are turned back into OCI ``.wh.`` entries; other device nodes and
sockets are skipped and reported.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

import zstandard

from faasd.errors import InvalidInputError
from faasd.images.extract import OVERLAY_OPAQUE_XATTR, WH_OPAQUE, WH_PREFIX

_KEEP_XATTRS = ("security.capability",)


@dataclass
class LayerWriteReport:
    diff_id: str = ""
    entries: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.hash.update(b)
        self._out.write(bytes(b))
        return len(b)


def _dest_prefix(dest: str) -> tuple[str, ...]:
    parts = PurePosixPath("/" + dest.strip("/")).parts[1:]
    if any(p in ("..", ".") for p in parts):
        raise InvalidInputError(f"destination {dest!r} may not contain '.' or '..'")
    return tuple(parts)


def write_layer(
    source: Path,
    out: BinaryIO,
    *,
    dest: str = "/",
    mtime: int | None = None,
    owner: tuple[int, int] | None = None,
    compression: str = "gzip",
    compresslevel: int | None = None,
) -> LayerWriteReport:
    """Write ``source`` as a compressed (``gzip`` or ``zstd``) layer tar into ``out``, placed at ``dest``."""
    source = Path(source)
    if not source.is_dir():
        raise InvalidInputError(f"{source} is not a directory")
    report = LayerWriteReport()
    comp: Any
    if compression == "gzip":
        comp = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=compresslevel or 6)
    elif compression == "zstd":
        comp = zstandard.ZstdCompressor(level=compresslevel or 3).stream_writer(out, closefd=False)
    else:
        raise InvalidInputError(f"unsupported layer compression {compression!r} (use gzip or zstd)")
    raw = _HashingWriter(cast(BinaryIO, comp))
    with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        prefix = _dest_prefix(dest)
        for i in range(1, len(prefix) + 1):
            info = tarfile.TarInfo("/".join(prefix[:i]))
            info.type = tarfile.DIRTYPE
            st = source.stat() if i == len(prefix) else None
            info.mode = stat.S_IMODE(st.st_mode) if st else 0o755
            info.mtime = 0 if st is None else _clamp(int(st.st_mtime), mtime)
            if st is not None and owner is None:
                info.uid, info.gid = st.st_uid, st.st_gid
            elif owner is not None:
                info.uid, info.gid = owner
            tf.addfile(info)
            report.entries += 1
        _walk(tf, source, "/".join(prefix), mtime, owner, report, {})
    comp.close()
    report.diff_id = f"sha256:{raw.hash.hexdigest()}"
    return report


def _clamp(t: int, limit: int | None) -> int:
    return t if limit is None else min(max(t, 0), limit)


def _walk(
    tf: tarfile.TarFile,
    directory: Path,
    rel: str,
    mtime: int | None,
    owner: tuple[int, int] | None,
    report: LayerWriteReport,
    inodes: dict[tuple[int, int], str],
) -> None:
    for name in sorted(os.listdir(directory)):
        path = directory / name
        arcname = f"{rel}/{name}" if rel else name
        st = os.lstat(path)
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = _clamp(int(st.st_mtime), mtime)
        info.uid, info.gid = owner if owner is not None else (st.st_uid, st.st_gid)
        info.uname = info.gname = ""
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            wh = tarfile.TarInfo(f"{rel}/{WH_PREFIX}{name}" if rel else f"{WH_PREFIX}{name}")
            wh.mtime = info.mtime
            tf.addfile(wh)
            report.entries += 1
            continue
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in inodes:
            info.type = tarfile.LNKTYPE
            info.linkname = inodes[key]
            tf.addfile(info)
            report.entries += 1
            continue
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
            report.entries += 1
            if _opaque(path):
                op = tarfile.TarInfo(f"{arcname}/{WH_OPAQUE}")
                op.mtime = info.mtime
                tf.addfile(op)
                report.entries += 1
            _walk(tf, path, arcname, mtime, owner, report, inodes)
            continue
        if stat.S_ISREG(mode):
            info.size = st.st_size
            _add_xattrs(info, path)
            with open(path, "rb") as f:
                tf.addfile(info, f)
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            tf.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            tf.addfile(info)
        else:
            report.skipped.append((arcname, "device node or socket not stored in layers"))
            continue
        report.entries += 1
        if st.st_nlink > 1:
            inodes[key] = arcname


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _add_xattrs(info: tarfile.TarInfo, path: Path) -> None:
    for name in _KEEP_XATTRS:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        headers = dict(info.pax_headers)
        headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
        info.pax_headers = headers
