"""Overlay layers as plain trees: a read-only layered view, path states, and layer arithmetic.

* :class:`LayeredView` -- overlay layers (lowest first) read like the mounted overlay would show them
  (whiteouts, opaque dirs), without mounting anything; :func:`state_of` / :class:`State` -- what a path
  is (kind, mode, owner, content digest, xattrs).
* :func:`diff_layers` -- one upper turning one view into another; :func:`flatten_uppers` (a stack of
  uppers folded into one: nested branches, bounded instance chains) and :func:`rebase_upper` (a running
  sandbox's upper re-expressed on top of its newest snapshot: lineage) are special cases.

Pure filesystem code, used by :mod:`faasd.snapshots.merge` (three-way merge) and
:mod:`faasd.snapshots.service`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import InvalidInputError
from faasd.snapshots.fstree import apply_metadata, is_opaque, is_whiteout, read_xattrs

_IGNORED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


@dataclass(frozen=True)
class State:
    """What a path is after a change (``kind == "deleted"`` for deletions)."""

    kind: str  # file | dir | symlink | char | block | fifo | deleted
    mode: int = 0
    uid: int = 0
    gid: int = 0
    digest: str = ""  # file content sha256, or symlink target
    rdev: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()

    def describe(self) -> str:
        if self.kind == "deleted":
            return "deleted"
        if self.kind == "file":
            return f"file {self.digest[:12]} mode {stat.S_IMODE(self.mode):o}"
        if self.kind == "symlink":
            return f"symlink -> {self.digest}"
        return f"{self.kind} mode {stat.S_IMODE(self.mode):o}"


@dataclass
class Change:
    state: State
    source: Path | None  # file in the branch upper holding the new content (None for deletions)
    mtime_ns: int


# ---------------------------------------------------------------------------------------------- views
class LayeredView:
    """Read-only view of overlay layers (lowest first), resolving whiteouts and opaque dirs."""

    def __init__(self, layers: Sequence[Path]) -> None:
        self.layers = [Path(p) for p in layers]

    def _lookup(self, rel: str) -> tuple[Path, os.stat_result] | None:
        parts = [p for p in rel.split("/") if p]
        # walk top layer down; a whiteout or a non-dir ancestor in a higher layer hides lower ones
        for layer in reversed(self.layers):
            cur = layer
            hidden = False
            found = True
            for i, part in enumerate(parts):
                cur = cur / part
                try:
                    st = cur.lstat()
                except (FileNotFoundError, NotADirectoryError):
                    found = False
                    break
                if is_whiteout(st):
                    return None
                if i < len(parts) - 1:
                    if not stat.S_ISDIR(st.st_mode):
                        return None  # a non-dir hides what is below it in lower layers
                    if is_opaque(cur):
                        hidden = True
            if found:
                st = cur.lstat()
                return cur, st
            if hidden:
                return None
        return None

    def stat(self, rel: str) -> tuple[Path, os.stat_result] | None:
        if rel == "":
            for layer in reversed(self.layers):
                return layer, layer.lstat()
            return None
        return self._lookup(rel)

    def state(self, rel: str) -> State | None:
        found = self.stat(rel)
        return None if found is None else state_of(found[0], found[1])

    def listdir(self, rel: str) -> list[str]:
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in reversed(self.layers):
            d = layer / rel if rel else layer
            try:
                st = d.lstat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st):
                break
            if not stat.S_ISDIR(st.st_mode):
                break
            for entry in os.scandir(d):
                if entry.name in names or entry.name in hidden:
                    continue
                if is_whiteout(entry.stat(follow_symlinks=False)):
                    hidden.add(entry.name)
                else:
                    names.add(entry.name)
            if is_opaque(d):
                break
        # also drop names hidden by ancestors (checked per name by stat)
        return sorted(n for n in names if self._lookup(f"{rel}/{n}" if rel else n) is not None)

    def walk(self, rel: str = "") -> Iterable[str]:
        """All paths below ``rel`` in the view (not including ``rel``), parents first."""
        for name in self.listdir(rel):
            child = f"{rel}/{name}" if rel else name
            yield child
            found = self.stat(child)
            if found is not None and stat.S_ISDIR(found[1].st_mode):
                yield from self.walk(child)


_digest_cache: dict[tuple[int, int, int, int], str] = {}


def _file_digest(path: Path, st: os.stat_result) -> str:
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _digest_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    if len(_digest_cache) > 100_000:
        _digest_cache.clear()
    _digest_cache[key] = digest
    return digest


def state_of(path: Path, st: os.stat_result) -> State:
    mode = st.st_mode
    xattrs = tuple(
        sorted((k, v) for k, v in read_xattrs(path).items() if not k.startswith(_IGNORED_XATTR_PREFIXES))
    )
    common = {"mode": stat.S_IMODE(mode), "uid": st.st_uid, "gid": st.st_gid, "xattrs": xattrs}
    if stat.S_ISREG(mode):
        return State("file", digest=_file_digest(path, st), **common)  # type: ignore[arg-type]
    if stat.S_ISDIR(mode):
        return State("dir", **common)  # type: ignore[arg-type]
    if stat.S_ISLNK(mode):
        return State("symlink", uid=st.st_uid, gid=st.st_gid, digest=os.readlink(path))
    if stat.S_ISCHR(mode):
        return State("char", rdev=st.st_rdev, **common)  # type: ignore[arg-type]
    if stat.S_ISBLK(mode):
        return State("block", rdev=st.st_rdev, **common)  # type: ignore[arg-type]
    if stat.S_ISFIFO(mode):
        return State("fifo", **common)  # type: ignore[arg-type]
    return State("socket", **common)  # type: ignore[arg-type]


DELETED = State("deleted")


def ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def ensure_parents(root: Path, rel: str, base: LayeredView, chosen: dict[str, tuple[int, Change]]) -> None:
    for a in ancestors(rel):
        d = root / a
        if d.is_dir():
            continue
        d.mkdir()
        found = base.stat(a)
        if found is not None and stat.S_ISDIR(found[1].st_mode):
            st = found[1]
            apply_metadata(d, st.st_mode, st.st_uid, st.st_gid, {}, st.st_mtime_ns, False)
        elif a in chosen and chosen[a][1].source is not None:
            src = chosen[a][1].source
            assert src is not None
            st = src.lstat()
            apply_metadata(d, st.st_mode, st.st_uid, st.st_gid, {}, st.st_mtime_ns, False)


# ---------------------------------------------------------------------------------------------- flatten
def flatten_uppers(base_layers: Sequence[Path], uppers: Sequence[Path], dest: Path) -> None:
    """Write into ``dest`` (must not exist) one upper equivalent to ``uppers`` (lowest first) stacked on
    ``base_layers``: what a nested branch changed relative to an older ancestor, in a single layer.

    The result has no opaque directories: what a replaced directory hid is written as explicit
    whiteouts. Names that are hard links of one file in the uppers stay hard links in the result
    (unless one of them is unchanged from the base, which then keeps providing it)."""
    diff_layers(base_layers, [*base_layers, *uppers], dest, touched_in=uppers)


def rebase_upper(
    lowers: Sequence[Path], upper: Path, onto: Sequence[Path], dest: Path
) -> None:
    """Write into ``dest`` (must not exist) the upper that, stacked on ``onto``, shows the same tree as
    ``upper`` stacked on ``lowers`` (both lowest first).

    Used when a running sandbox was snapshotted and that snapshot became its new base: the sandbox's
    overlay still has its old ``lowers``, the next snapshot is stored relative to the new base's
    lowers (``onto``). Only the paths in ``upper`` and in the layers of ``onto`` that ``lowers`` lacks
    can differ, so only those are compared.
    """
    common = set(map(str, lowers))
    extra = [Path(p) for p in onto if str(p) not in common]
    diff_layers(onto, [*lowers, upper], dest, touched_in=[upper, *extra])


def diff_layers(
    base_layers: Sequence[Path], top_layers: Sequence[Path], dest: Path, *, touched_in: Sequence[Path]
) -> None:
    """Write into ``dest`` (must not exist) one upper that turns the view of ``base_layers`` into the
    view of ``top_layers``. Only paths present in one of the ``touched_in`` layers are compared (the
    layers in which the two views can differ).

    The result has no opaque directories: what a replaced directory hid is written as explicit
    whiteouts. Names that are hard links of one file stay hard links in the result (unless one of
    them is unchanged from the base, which then keeps providing it)."""
    if dest.exists():
        raise InvalidInputError(f"flatten destination {dest} already exists")
    base = LayeredView(base_layers)
    top = LayeredView(top_layers)
    touched: set[str] = set()
    for u in touched_in:
        for dirpath, dirnames, filenames in os.walk(u):
            rel_dir = os.path.relpath(dirpath, u)
            for name in dirnames + filenames:
                touched.add(name if rel_dir == "." else f"{rel_dir}/{name}")
    tmp = dest.with_name(dest.name + ".tmp-flatten")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    root = base.stat("")
    if root is not None:
        apply_metadata(tmp, root[1].st_mode, root[1].st_uid, root[1].st_gid, {}, None, False)
    chosen: dict[str, tuple[int, Change]] = {}
    gone: set[str] = set()
    links: dict[tuple[int, int], Path] = {}  # (dev, ino) of a source file -> its first copy
    dir_meta: list[tuple[Path, Path]] = []
    for rel in sorted(touched, key=lambda p: p.split("/")):
        if any(a in gone for a in ancestors(rel)):
            continue
        new, old = top.stat(rel), base.stat(rel)
        target = tmp / rel
        if new is None:
            if old is not None and not os.path.lexists(target):
                ensure_parents(tmp, rel, base, chosen)
                os.mknod(target, stat.S_IFCHR | 0o000, 0)
            gone.add(rel)
            continue
        src, st = new
        new_state, old_state = state_of(src, st), (state_of(*old) if old is not None else None)
        if stat.S_ISDIR(st.st_mode):
            if new_state != old_state:
                ensure_parents(tmp, rel, base, chosen)
                target.mkdir(exist_ok=True)
                dir_meta.append((target, src))
            if old is not None and stat.S_ISDIR(old[1].st_mode):
                kept = set(top.listdir(rel))
                for child in base.listdir(rel):
                    if child not in kept:
                        ensure_parents(tmp, f"{rel}/{child}", base, chosen)
                        os.mknod(tmp / rel / child, stat.S_IFCHR | 0o000, 0)
                        gone.add(f"{rel}/{child}")
            continue
        if new_state == old_state:
            continue
        ensure_parents(tmp, rel, base, chosen)
        gone.add(rel)  # nothing below a non-directory
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            first = links.get((st.st_dev, st.st_ino))
            if first is not None:  # another name of a file already in the result: link it
                os.link(first, target)
                continue
            links[(st.st_dev, st.st_ino)] = target
        if stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, target, follow_symlinks=False)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), target)
        else:
            os.mknod(target, st.st_mode, st.st_rdev)
        apply_metadata(target, st.st_mode, st.st_uid, st.st_gid, dict(new_state.xattrs), st.st_mtime_ns,
                       stat.S_ISLNK(st.st_mode))
    for target, src in reversed(dir_meta):
        st = src.lstat()
        apply_metadata(target, st.st_mode, st.st_uid, st.st_gid, dict(state_of(src, st).xattrs),
                       st.st_mtime_ns, False)
    tmp.rename(dest)
