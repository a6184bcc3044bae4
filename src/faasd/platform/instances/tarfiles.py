"""Upload and download archives of instances: tar checks, files -> tar, path checks.

Extraction and archiving run *inside* the instance (:mod:`faasd.platform.instances.files`); these
checks refuse archives that would escape the target directory before anything is sent in.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import time
from collections.abc import Sequence

from faasd.errors import InvalidInputError
from faasd.platform.instances.specs import UploadedFile


def _norm_member(name: str) -> str:
    if name.startswith("/"):
        raise InvalidInputError(
            f"archive member {name!r} has an absolute path; use paths relative to the target"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInputError(
            f"archive member {name!r} contains '..'; it would escape the target directory"
        )
    return "/".join(parts)


def check_tar(data: bytes) -> int:
    """Validate an upload archive; returns the number of members.

    Rejected: absolute paths, ``..`` components, device nodes and fifos, symlinks or hard links whose
    target is absolute or leaves the target directory, and members written through a symlink of the same
    archive. (Extraction also happens *inside* the sandbox, so even an accepted archive can only touch
    the instance's own filesystem.)
    """
    links: set[str] = set()
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidInputError(f"upload body is not a valid tar archive: {exc}") from None
    for m in members:
        count += 1
        rel = _norm_member(m.name)
        parts = rel.split("/") if rel else []
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise InvalidInputError(
                    f"archive member {m.name!r} is written through a symlink of the archive"
                )
        if m.isdev() or m.isfifo():
            raise InvalidInputError(
                f"archive member {m.name!r} is a device or fifo; only files, dirs and links"
            )
        if m.issym() or m.islnk():
            target = m.linkname
            if target.startswith("/"):
                raise InvalidInputError(
                    f"archive member {m.name!r} links to the absolute path {target!r}; use relative links"
                )
            base = posixpath.dirname(rel) if m.issym() else ""
            resolved = posixpath.normpath(posixpath.join(base, target))
            if resolved == ".." or resolved.startswith("../"):
                raise InvalidInputError(
                    f"archive member {m.name!r} links to {target!r}, outside the target directory"
                )
            if m.issym():
                links.add(rel)
    return count


def files_to_tar(files: Sequence[UploadedFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in files:
            rel = _norm_member(f.path)
            if not rel:
                raise InvalidInputError(f"file path {f.path!r} names no file")
            info = tarfile.TarInfo(rel)
            info.size = len(f.content)
            info.mode = f.mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(f.content))
    return buf.getvalue()


def abs_path(path: str, what: str) -> str:
    if not path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise InvalidInputError(f"{what} {path!r} must be an absolute path without '..'")
    return posixpath.normpath(path)


def tar_members(data: bytes) -> list[str]:
    """Names in a tar archive (helper for clients and tests)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return tar.getnames()
