"""Trim rules: what is deleted from a base image's rootfs (docs, translations, caches), safely."""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import InvalidInputError


@dataclass(frozen=True)
class TrimRule:
    """Delete every path matching ``pattern`` (relative to the rootfs, ``fnmatch`` per component),
    except paths matching one of ``keep`` (directories containing a kept path are trimmed inside)."""

    pattern: str
    keep: tuple[str, ...] = ()


TRIM_RULES: tuple[TrimRule, ...] = (
    # Documentation: keep the copyright files (licence compliance), drop the rest.
    TrimRule("usr/share/doc/*", keep=("usr/share/doc/*/copyright",)),
    TrimRule("usr/share/man"),
    TrimRule("usr/share/info"),
    TrimRule("usr/share/groff"),
    TrimRule("usr/share/lintian"),
    TrimRule("usr/share/linda"),
    TrimRule("usr/share/bug"),
    # Translations. C.UTF-8 (usr/lib/locale/C.utf8) is what the images use and stays.
    TrimRule("usr/share/locale/*", keep=("usr/share/locale/locale.alias",)),
    TrimRule("usr/share/i18n/locales"),
    # Package manager state that is rebuilt by `apt-get update`, and caches.
    TrimRule("var/lib/apt/lists/*"),
    TrimRule("var/cache/apt/*.bin"),
    TrimRule("var/cache/apt/archives/*.deb"),
    TrimRule("var/cache/debconf/*-old"),
    TrimRule("var/lib/dpkg/*-old"),
    TrimRule("var/log/*.log"),
    TrimRule("var/log/apt/*"),
    TrimRule("root/.cache"),
    TrimRule("tmp/*"),
    TrimRule("var/tmp/*"),
    # The runtime provides /dev; debootstrap's device nodes have no place in a layer.
    TrimRule("dev/*"),
    TrimRule("debootstrap"),
)


@dataclass
class TrimReport:
    removed_entries: int = 0
    removed_bytes: int = 0


def _rel_parts(rel: str) -> list[str]:
    return [p for p in rel.split("/") if p]


def _matches(rel: str, pattern: str) -> bool:
    parts, pat = _rel_parts(rel), _rel_parts(pattern)
    return len(parts) == len(pat) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pat, strict=True))


def _may_contain(rel: str, pattern: str) -> bool:
    """True if some path strictly below ``rel`` could match ``pattern``."""
    parts, pat = _rel_parts(rel), _rel_parts(pattern)
    return len(pat) > len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pat, strict=False))


def _iter_matches(root: Path, pattern: str) -> Iterator[tuple[Path, str]]:
    """Paths under ``root`` matching ``pattern``, never following a symlink to descend.

    A base image's rootfs is full of absolute symlinks; following one while trimming would delete
    files of the host, so intermediate components must be real directories.
    """
    current: list[tuple[Path, str]] = [(root, "")]
    parts = _rel_parts(pattern)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        found: list[tuple[Path, str]] = []
        for directory, rel in current:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if not fnmatch.fnmatchcase(entry.name, part):
                    continue
                if not last and not entry.is_dir(follow_symlinks=False):
                    continue
                found.append((Path(entry.path), f"{rel}/{entry.name}" if rel else entry.name))
        current = found
    yield from current


def _tree_size(path: Path) -> tuple[int, int]:
    """(entries, bytes) of a path, not following symlinks; hardlinked files counted once."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return 1, st.st_size
    entries, size, seen = 1, 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            s = os.lstat(os.path.join(dirpath, name))
            entries += 1
            if not stat.S_ISDIR(s.st_mode) and (s.st_ino, s.st_dev) not in seen:
                seen.add((s.st_ino, s.st_dev))
                size += s.st_size
    return entries, size


def _remove_path(path: Path, rel: str, keep: Sequence[str], report: TrimReport) -> None:
    if any(_matches(rel, k) for k in keep):
        return
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        if any(_may_contain(rel, k) for k in keep):
            for entry in sorted(os.scandir(path), key=lambda e: e.name):
                _remove_path(Path(entry.path), f"{rel}/{entry.name}", keep, report)
            if not any(os.scandir(path)):  # nothing kept inside: the directory goes too
                path.rmdir()
                report.removed_entries += 1
            return
        entries, size = _tree_size(path)
        shutil.rmtree(path)  # rmtree never follows symlinks
    else:
        entries, size = 1, st.st_size
        path.unlink()
    report.removed_entries += entries
    report.removed_bytes += size


def apply_trim_rules(rootfs: Path, rules: Iterable[TrimRule] = TRIM_RULES) -> TrimReport:
    """Delete what ``rules`` match under ``rootfs`` (safely: symlinks are removed, never followed)."""
    report = TrimReport()
    root = Path(rootfs)
    if not root.is_dir() or root.is_symlink():
        raise InvalidInputError(f"{root} is not a directory")
    for rule in rules:
        for path, rel in list(_iter_matches(root, rule.pattern)):
            _remove_path(path, rel, rule.keep, report)
    return report
