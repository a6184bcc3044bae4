"""Packing a function's source directory into the reproducible ``tar.gz`` a source deploy uploads."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


def pack_source(directory: Path) -> bytes:
    """A reproducible ``tar.gz`` of a function's source directory (sorted, zeroed owners and times)."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory; pass the folder holding the function's code")
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _walk(directory):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(directory).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return buf.getvalue()


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name in _SKIP_DIRS or entry.suffix == ".pyc":
            continue
        out.append(entry)
        if entry.is_dir() and not entry.is_symlink():
            out.extend(_walk(entry))
    return out
