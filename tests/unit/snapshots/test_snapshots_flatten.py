"""Flattening a chain of overlay uppers into one (``flatten_uppers``) and a snapshot chain into one
parentless snapshot (``flatten_snapshot``): whiteouts, opaque dirs, overwrites, hard links, metadata."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faasd.errors import InvalidInputError
from faasd.snapshots.fstree import is_opaque, is_whiteout
from faasd.snapshots.merge import LayeredView, flatten_uppers
from faasd.snapshots.service import flatten_snapshot, snapshot_lowers
from faasd.snapshots.store import SnapshotMeta, SnapshotStore

pytestmark = pytest.mark.unit
OPAQUE = "trusted.overlay.opaque" if os.geteuid() == 0 else "user.overlay.opaque"


# ---------------------------------------------------------------- a chain of uppers, written like overlayfs
class Chain:
    """Image layer ``base`` plus uppers written the way overlayfs writes them: each new upper records
    the edits made on the view of everything below it. ``truth`` is a plain directory with that view
    (the expected result)."""

    def __init__(self, root: Path, base_files: dict[str, bytes]) -> None:
        self.root = root
        self.base = root / "base"
        self.truth = root / "truth"
        for d in (self.base, self.truth):
            for rel, data in base_files.items():
                p = d / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            d.mkdir(exist_ok=True)
        self.uppers: list[Path] = []
        self._below: Path = self.base  # view the current upper is written against
        self.upper = self.new_layer()

    def new_layer(self) -> Path:
        if self.uppers:
            below = self.root / f"below{len(self.uppers)}"
            shutil.copytree(self.truth, below, symlinks=True)
            self._below = below
        u = self.root / f"u{len(self.uppers)}"
        u.mkdir()
        self.uppers.append(u)
        self.upper = u
        return u

    def _lower_has(self, rel: str) -> bool:
        return os.path.lexists(self._below / rel)

    def _copy_up_parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            d = self.upper / sub
            if d.is_dir() and not d.is_symlink():
                continue
            replaced = os.path.lexists(d)  # a whiteout (deleted in this layer) or a file
            if replaced:
                d.unlink()
            d.mkdir()
            lower = self._below / sub
            if lower.is_dir() and not lower.is_symlink() and not replaced:
                os.chmod(d, stat.S_IMODE(lower.stat().st_mode))
            else:
                os.setxattr(d, OPAQUE, b"y")
            (self.truth / sub).mkdir(parents=True, exist_ok=True)

    def _clear(self, root: Path, rel: str) -> None:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        self._copy_up_parents(rel)
        for root in (self.upper, self.truth):
            self._clear(root, rel)
            (root / rel).write_bytes(data)
            os.chmod(root / rel, mode)

    def chmod(self, rel: str, mode: int) -> None:
        self._copy_up_parents(rel)
        if not os.path.lexists(self.upper / rel):
            shutil.copy2(self._below / rel, self.upper / rel)
        for root in (self.upper, self.truth):
            os.chmod(root / rel, mode)

    def link(self, src: str, rel: str) -> None:
        """``ln src rel`` (src copied up first, as overlayfs does)."""
        self._copy_up_parents(src)
        self._copy_up_parents(rel)
        if not os.path.lexists(self.upper / src):
            shutil.copy2(self._below / src, self.upper / src)
        for root in (self.upper, self.truth):
            self._clear(root, rel)
            os.link(root / src, root / rel)

    def symlink(self, target: str, rel: str) -> None:
        self._copy_up_parents(rel)
        for root in (self.upper, self.truth):
            self._clear(root, rel)
            os.symlink(target, root / rel)

    def delete(self, rel: str) -> None:
        self._copy_up_parents(rel)
        self._clear(self.upper, rel)
        self._clear(self.truth, rel)
        if self._lower_has(rel):
            os.mknod(self.upper / rel, stat.S_IFCHR | 0o000, 0)

    def replace_dir(self, rel: str, files: dict[str, bytes]) -> None:
        """``rm -rf rel && mkdir rel`` + files: an opaque dir when the lower had ``rel``."""
        self._copy_up_parents(rel)
        self._clear(self.upper, rel)
        self._clear(self.truth, rel)
        (self.upper / rel).mkdir()
        (self.truth / rel).mkdir()
        if self._lower_has(rel):
            os.setxattr(self.upper / rel, OPAQUE, b"y")
        for name, data in files.items():
            (self.upper / rel / name).write_bytes(data)
            (self.truth / rel / name).write_bytes(data)


def plain_tree(root: Path) -> dict[str, object]:
    """A plain directory as path -> (kind, mode, content / target, hard-link group)."""
    out: dict[str, object] = {}
    groups: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st_ = p.lstat()
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                group = groups.setdefault(st_.st_ino, rel) if st_.st_nlink > 1 else None
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), p.read_bytes(), group)
    return out


def view_tree(layers: list[Path]) -> dict[str, object]:
    """The overlay view of ``layers`` (lowest first), as :func:`plain_tree` would see it mounted."""
    view = LayeredView(layers)
    out: dict[str, object] = {}
    groups: dict[tuple[int, int], str] = {}
    for rel in view.walk():
        found = view.stat(rel)
        assert found is not None
        p, st_ = found
        if stat.S_ISLNK(st_.st_mode):
            out[rel] = ("symlink", os.readlink(p))
        elif stat.S_ISDIR(st_.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
        else:
            key = (st_.st_dev, st_.st_ino)
            group = groups.setdefault(key, rel) if st_.st_nlink > 1 else None
            out[rel] = ("file", stat.S_IMODE(st_.st_mode), p.read_bytes(), group)
    return out


def _normalise_groups(tree: dict[str, object]) -> dict[str, object]:
    """Hard-link group names depend on walk order: name each group by its smallest member."""
    members: dict[object, list[str]] = {}
    for rel, v in tree.items():
        if isinstance(v, tuple) and v[0] == "file" and v[3] is not None:
            members.setdefault(v[3], []).append(rel)
    out = dict(tree)
    for names in members.values():
        first = min(names)
        for rel in names:
            v = out[rel]
            assert isinstance(v, tuple)
            out[rel] = (*v[:3], first if len(names) > 1 else None)
    return out


BASE = {"etc/issue": b"debian", "etc/keep": b"k", "usr/doc/a": b"a", "usr/doc/b/c": b"c", "bin/sh": b"sh"}


def scenario(tmp: Path) -> Chain:
    """Eight uppers: overwrites, deletes of image and chain content, opaque dirs, links, chmod."""
    c = Chain(tmp, BASE)
    c.write("data/counter", b"1")
    c.write("data/f1", b"f1")
    c.delete("etc/issue")  # image file deleted once
    c.new_layer()
    c.write("data/counter", b"2")
    c.delete("usr/doc")  # image dir deleted
    c.write("data/box/a", b"a")
    c.new_layer()
    c.delete("data/f1")  # chain file deleted: no whiteout needed any more
    c.write("usr/doc/only", b"mine")  # the dir comes back: opaque, hides the image's usr/doc
    c.new_layer()
    c.replace_dir("data/box", {"b": b"b"})  # opaque over an older upper's dir
    c.write("data/phoenix", b"first")
    c.new_layer()
    c.delete("data/phoenix")
    c.write("data/hl1", b"linked")
    c.link("data/hl1", "data/hl2")
    c.new_layer()
    c.write("data/phoenix", b"second")
    c.chmod("etc/keep", 0o600)  # metadata-only change of an image file
    c.symlink("../etc/keep", "data/link")
    c.new_layer()
    c.write("data/deep/a/b/c", b"deep")
    c.delete("bin")  # a whole image dir
    c.new_layer()
    c.replace_dir("data/deep/a", {"n": b"new"})
    c.write("bin", b"now a file")  # deleted dir comes back as a file
    c.write("data/counter", b"8")
    return c


def test_flatten_chain_of_eight_uppers_matches_the_stacked_view(tmp_path: Path) -> None:
    c = scenario(tmp_path)
    assert len(c.uppers) == 8
    stacked = view_tree([c.base, *c.uppers])
    assert _normalise_groups(stacked) == _normalise_groups(plain_tree(c.truth))  # the model is right
    flat = tmp_path / "flat"
    flatten_uppers([c.base], c.uppers, flat)
    assert _normalise_groups(view_tree([c.base, flat])) == _normalise_groups(stacked)

    # explicit whiteouts instead of opaque dirs; deleted chain-only files leave nothing behind
    assert is_whiteout((flat / "etc/issue").lstat())
    assert not os.path.lexists(flat / "data/f1")
    assert (flat / "usr/doc").is_dir() and not is_opaque(flat / "usr/doc")
    assert is_whiteout((flat / "usr/doc/a").lstat()) and is_whiteout((flat / "usr/doc/b").lstat())
    assert sorted(os.listdir(flat / "data/box")) == ["b"]
    assert sorted(os.listdir(flat / "data/deep/a")) == ["n"]
    assert (flat / "bin").is_file() and (flat / "bin").read_bytes() == b"now a file"
    assert (flat / "data/hl1").stat().st_ino == (flat / "data/hl2").stat().st_ino
    assert stat.S_IMODE((flat / "etc/keep").stat().st_mode) == 0o600
    for dirpath, dirnames, _ in os.walk(flat):
        for d in dirnames:
            assert not is_opaque(Path(dirpath) / d)


def test_flatten_is_stable_when_flattened_again_on_top(tmp_path: Path) -> None:
    """A flattened upper is a valid first link of a new chain (what an instance does every 8 stops)."""
    c = scenario(tmp_path)
    flat1 = tmp_path / "flat1"
    flatten_uppers([c.base], c.uppers, flat1)
    c.new_layer()
    c.delete("data/counter")
    c.replace_dir("usr/doc", {"again": b"2"})
    c.write("etc/issue", b"restored")
    flat2 = tmp_path / "flat2"
    flatten_uppers([c.base], [flat1, c.uppers[-1]], flat2)
    assert _normalise_groups(view_tree([c.base, flat2])) == _normalise_groups(plain_tree(c.truth))
    assert (flat2 / "etc/issue").read_bytes() == b"restored"


def test_flatten_refuses_existing_destination(tmp_path: Path) -> None:
    c = Chain(tmp_path, BASE)
    (tmp_path / "dest").mkdir()
    with pytest.raises(InvalidInputError):
        flatten_uppers([c.base], c.uppers, tmp_path / "dest")


# ------------------------------------------------------------------------------ property: random chains
NAMES = ["a", "b", "d", "d/x", "d/y", "d/e", "d/e/z", "f"]
op_st = st.tuples(
    st.sampled_from(["write", "delete", "replace", "chmod"]), st.sampled_from(NAMES), st.binary(max_size=3)
)


def _apply_op(c: Chain, op: tuple[str, str, bytes]) -> None:
    kind, rel, data = op
    exists = os.path.lexists(c.truth / rel)
    parent_ok = all(
        not os.path.lexists(c.truth / a) or (c.truth / a).is_dir()
        for a in ["/".join(rel.split("/")[:i]) for i in range(1, len(rel.split("/")))]
    )
    if kind == "write" and parent_ok:
        if (c.truth / rel).is_dir():
            c.delete(rel)
        c.write(rel, data)
    elif kind == "delete" and exists:
        c.delete(rel)
    elif kind == "replace" and parent_ok:
        c.replace_dir(rel, {"r": data})
    elif kind == "chmod" and exists and (c.truth / rel).is_file():
        c.chmod(rel, 0o600 if stat.S_IMODE((c.truth / rel).stat().st_mode) != 0o600 else 0o644)


@settings(max_examples=60, deadline=None, database=None)
@given(layers=st.lists(st.lists(op_st, max_size=4), min_size=1, max_size=6))
def test_flatten_random_chains_equal_stacked_view(layers: list[list[tuple[str, str, bytes]]]) -> None:
    with tempfile.TemporaryDirectory() as td:
        c = Chain(Path(td), {"a": b"A", "d/x": b"X", "d/e/z": b"Z"})
        for i, ops in enumerate(layers):
            if i:
                c.new_layer()
            for op in ops:
                _apply_op(c, op)
        expected = plain_tree(c.truth)
        assert view_tree([c.base, *c.uppers]) == expected
        flatten_uppers([c.base], c.uppers, Path(td) / "flat")
        assert view_tree([c.base, Path(td) / "flat"]) == expected


# ----------------------------------------------------------------------------- snapshots: flatten_snapshot
def test_flatten_snapshot_keeps_files_and_process_image(tmp_path: Path) -> None:
    c = scenario(tmp_path / "chain")
    store = SnapshotStore(tmp_path / "store")
    parent: str | None = None
    ids = []
    for i, upper in enumerate(c.uppers):
        trees = {"upper": upper}
        if i == len(c.uppers) - 1:  # the tip has a process image
            criu = tmp_path / "criu"
            criu.mkdir()
            (criu / "pages-1.img").write_bytes(b"\x01" * 5000)
            (criu / "core-1.img").write_bytes(b"core")
            bundle = tmp_path / "bundle"
            bundle.mkdir()
            (bundle / "config.json").write_text('{"process": {"args": ["sleep"]}}')
            trees |= {"criu": criu, "bundle": bundle}
        meta = SnapshotMeta(
            layers=[str(c.base)] if parent is None else [],
            parent=parent,
            labels={"k": "v"},
            limits={"memory_mb": 64},
        )
        parent = store.create(trees, meta).id
        ids.append(parent)
    assert parent is not None
    assert len(store.chain(parent)) == 8 and len(snapshot_lowers(store, parent)) == 9

    flat = flatten_snapshot(store, parent)
    assert flat.meta.parent is None and flat.meta.layers == [str(c.base)]
    assert flat.meta.labels == {"k": "v"} and flat.meta.limits == {"memory_mb": 64}
    assert flat.meta.extra["flattened_from"] == ids
    assert store.get(parent).meta.parent == ids[-2]  # the original chain is untouched
    lowers = snapshot_lowers(store, flat.id)
    assert lowers == [c.base, store.materialized(flat.id).upper]
    assert _normalise_groups(view_tree(lowers)) == _normalise_groups(plain_tree(c.truth))
    # the process image is carried over as is (deduplicated: no new blobs for it)
    tip = store.get(parent)
    for name in ("criu", "bundle"):
        assert [(e.path, e.chunks) for e in flat.trees[name]] == [(e.path, e.chunks) for e in tip.trees[name]]
    mat = store.materialized(flat.id)
    assert mat.criu is not None and (mat.criu / "core-1.img").read_bytes() == b"core"

    # the old chain can go: gc then frees what only it referenced, the flat snapshot still restores
    for sid in reversed(ids):
        store.delete(sid)
    report = store.gc()
    assert report.removed_materialized == len(ids)
    assert {p.name for p in store.mnt_dir.iterdir()} == {flat.id}
    shutil.rmtree(store.mnt_dir / flat.id)
    assert _normalise_groups(view_tree(snapshot_lowers(store, flat.id))) == _normalise_groups(
        plain_tree(c.truth)
    )


def test_flatten_snapshot_of_empty_uppers_without_criu(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "store")
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "f").write_text("f")
    empty = tmp_path / "empty"
    empty.mkdir()
    a = store.create({"upper": empty}, SnapshotMeta(layers=[str(layer)]))
    b = store.create({"upper": empty}, SnapshotMeta(parent=a.id))
    flat = flatten_snapshot(store, b.id, SnapshotMeta(labels={"x": "y"}))
    assert "criu" not in flat.trees and "bundle" not in flat.trees
    assert flat.meta.labels == {"x": "y"} and flat.meta.parent is None and flat.meta.layers == [str(layer)]
    upper = store.materialized(flat.id).upper
    assert upper is not None and os.listdir(upper) == []
    assert view_tree(snapshot_lowers(store, flat.id)) == plain_tree(layer)


def test_flatten_snapshot_onto_an_ancestor_keeps_it_as_parent(tmp_path: Path) -> None:
    c = scenario(tmp_path / "chain")
    store = SnapshotStore(tmp_path / "store")
    ids: list[str] = []
    for upper in c.uppers:
        meta = SnapshotMeta(layers=[] if ids else [str(c.base)], parent=ids[-1] if ids else None)
        ids.append(store.create({"upper": upper}, meta).id)
    onto = ids[2]
    flat = flatten_snapshot(store, ids[-1], onto=onto)
    assert flat.meta.parent == onto and flat.meta.extra["flattened_from"] == ids[3:]
    assert [s.id for s in store.chain(flat.id)] == [*ids[:3], flat.id]
    lowers = snapshot_lowers(store, flat.id)
    assert len(lowers) == 5  # image + 3 kept links + the flattened one
    assert _normalise_groups(view_tree(lowers)) == _normalise_groups(plain_tree(c.truth))
    with pytest.raises(InvalidInputError):
        flatten_snapshot(store, ids[2], onto=ids[-1])  # not an ancestor
    with pytest.raises(InvalidInputError):
        flatten_snapshot(store, ids[2], onto=ids[2])
