"""Three-way merge of overlay uppers: examples per conflict kind and strategy, plus hypothesis properties."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faasd.errors import ConflictError, InvalidInputError
from faasd.snapshots.merge import STRATEGIES, LayeredView, flatten_uppers, merge_uppers

pytestmark = pytest.mark.unit
OPAQUE = "trusted.overlay.opaque" if os.geteuid() == 0 else "user.overlay.opaque"


# ------------------------------------------------------------------ helpers: build uppers like overlayfs
def make_base(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


class Upper:
    """Writes into an upper dir the way overlayfs would for edits made on base + upper."""

    def __init__(self, base: Path, upper: Path) -> None:
        self.base, self.upper = base, upper
        upper.mkdir(parents=True)

    def _copy_up_parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = self.upper.joinpath(*parts[:i])
            if d.is_dir() and not d.is_symlink():
                continue
            if d.exists() or d.is_symlink():
                d.unlink()  # whiteout or file replaced by a dir
            d.mkdir()
            b = self.base.joinpath(*parts[:i])
            if b.is_dir() and not b.is_symlink():
                os.chmod(d, stat.S_IMODE(b.stat().st_mode))
            else:
                os.setxattr(d, OPAQUE, b"y")  # new dir: nothing below shows through

    def write(self, rel: str, data: bytes, mtime: int | None = None) -> None:
        self._copy_up_parents(rel)
        p = self.upper / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        p.write_bytes(data)
        if mtime is not None:
            os.utime(p, ns=(mtime, mtime))

    def delete(self, rel: str, mtime: int | None = None) -> None:
        self._copy_up_parents(rel)
        p = self.upper / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        if (self.base / rel).exists():
            os.mknod(p, stat.S_IFCHR | 0o000, 0)
            if mtime is not None:
                os.utime(p, ns=(mtime, mtime))

    def replace_dir(self, rel: str, files: dict[str, bytes]) -> None:
        """rm -rf rel; mkdir rel; write files (an opaque dir)."""
        self.delete(rel)
        p = self.upper / rel
        if p.exists():
            p.unlink()
        p.mkdir()
        os.setxattr(p, OPAQUE, b"y")
        for name, data in files.items():
            (p / name).write_bytes(data)


def model_view(base: Path, uppers: list[Path]) -> dict[str, object]:
    """Independent model of an overlay view: path -> bytes (file) or 'dir'."""
    view: dict[str, object] = {}

    def load(root: Path, prefix: str = "") -> None:
        for name in sorted(os.listdir(root / prefix if prefix else root)):
            rel = f"{prefix}/{name}" if prefix else name
            p = root / rel
            st_ = p.lstat()
            if stat.S_ISCHR(st_.st_mode) and st_.st_rdev == 0:
                for k in [k for k in view if k == rel or k.startswith(rel + "/")]:
                    del view[k]
                continue
            if stat.S_ISDIR(st_.st_mode):
                opaque = False
                for n in ("trusted.overlay.opaque", "user.overlay.opaque"):
                    with contextlib.suppress(OSError):
                        opaque = opaque or os.getxattr(p, n) == b"y"
                if opaque or view.get(rel) != "dir":
                    for k in [k for k in view if k == rel or k.startswith(rel + "/")]:
                        del view[k]
                view[rel] = "dir"
                load(root, rel)
            else:
                for k in [k for k in view if k == rel or k.startswith(rel + "/")]:
                    del view[k]
                view[rel] = p.read_bytes()

    load(base)
    for u in uppers:
        load(u)
    return view


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_base(
        tmp_path / "base", {"a.txt": b"a", "b.txt": b"b", "d/x": b"x", "d/y": b"y", "keep/k": b"k"}
    )


def branches(tmp_path: Path, base: Path, n: int = 2) -> list[Upper]:
    return [Upper(base, tmp_path / f"u{i}") for i in range(n)]


def run(tmp_path: Path, base: Path, ups: list[Upper], strategy: str, name: str = "out"):  # type: ignore[no-untyped-def]
    out = tmp_path / name
    rep = merge_uppers([base], [u.upper for u in ups], out, strategy=strategy)
    return rep, model_view(base, [out])


# ------------------------------------------------------------------ examples
def test_disjoint_changes_all_taken(tmp_path: Path, base: Path) -> None:
    u0, u1 = branches(tmp_path, base)
    u0.write("a.txt", b"A0")
    u0.write("new0/f", b"n0")
    u1.delete("b.txt")
    u1.write("d/z", b"z1")
    rep, view = run(tmp_path, base, [u0, u1], "fail")
    assert rep.conflicts == []
    assert view["a.txt"] == b"A0" and view["new0/f"] == b"n0" and "b.txt" not in view
    assert view["d/z"] == b"z1" and view["d/x"] == b"x" and view["keep/k"] == b"k"
    assert sorted(rep.taken["branch0"]) == ["a.txt", "new0", "new0/f"]
    assert sorted(rep.taken["branch1"]) == ["b.txt", "d/z"]


def test_identical_change_is_not_a_conflict(tmp_path: Path, base: Path) -> None:
    u0, u1 = branches(tmp_path, base)
    for u in (u0, u1):
        u.write("a.txt", b"same")
        u.delete("b.txt")
    rep, view = run(tmp_path, base, [u0, u1], "intersection")
    assert rep.conflicts == [] and sorted(rep.identical) == ["a.txt", "b.txt"]
    assert view["a.txt"] == b"same" and "b.txt" not in view


@pytest.mark.parametrize(
    ("edit", "kind"),
    [
        (lambda u0, u1: (u0.write("a.txt", b"1"), u1.write("a.txt", b"2")), "both-modified"),
        (lambda u0, u1: (u0.write("a.txt", b"1"), u1.delete("a.txt")), "modify/delete"),
        (lambda u0, u1: (u0.write("n.txt", b"1"), u1.write("n.txt", b"2")), "add/add"),
        (lambda u0, u1: (u0.write("a.txt", b"1"), u1.write("a.txt/inner", b"2")), "type-change"),
        (lambda u0, u1: (u0.delete("d"), u1.write("d/x", b"X")), "modify/delete"),
        (lambda u0, u1: (u0.delete("d"), u1.write("d/new", b"N")), "modify/delete"),
        (lambda u0, u1: (u0.replace_dir("d", {"only": b"o"}), u1.write("d/x", b"X")), "modify/delete"),
    ],
)
def test_conflict_kinds(tmp_path: Path, base: Path, edit, kind: str) -> None:  # type: ignore[no-untyped-def]
    u0, u1 = branches(tmp_path, base)
    edit(u0, u1)
    with pytest.raises(ConflictError) as info:
        run(tmp_path, base, [u0, u1], "fail")
    assert not (tmp_path / "out").exists()
    report = info.value.details["report"]
    assert [c["kind"] for c in report["conflicts"]] == [kind]


def test_strategies_resolve_conflicts(tmp_path: Path, base: Path) -> None:
    u0, u1, u2 = branches(tmp_path, base, 3)
    u0.write("a.txt", b"zero", mtime=3_000_000_000_000_000_000)
    u1.write("a.txt", b"one", mtime=1_000_000_000_000_000_000)
    u2.write("a.txt", b"two", mtime=2_000_000_000_000_000_000)
    u1.write("solo", b"s")
    expected = {"ours": b"zero", "theirs": b"two", "latest": b"zero", "union": b"zero", "intersection": b"a"}
    for strategy, content in expected.items():
        rep, view = run(tmp_path, base, [u0, u1, u2], strategy, name=f"out-{strategy}")
        assert view["a.txt"] == content, strategy
        assert [c.kind for c in rep.conflicts] == ["both-modified"]
        assert ("solo" in view) == (strategy != "intersection")
    _rep, view = run(tmp_path, base, [u0, u1, u2], "union", name="out-union2")
    assert view["a.txt.conflict-branch1"] == b"one" and view["a.txt.conflict-branch2"] == b"two"


def test_latest_with_delete(tmp_path: Path, base: Path) -> None:
    u0, u1 = branches(tmp_path, base)
    u0.write("d/x", b"new", mtime=1_000_000_000_000_000_000)
    u1.delete("d", mtime=2_000_000_000_000_000_000)
    rep, view = run(tmp_path, base, [u0, u1], "latest")
    assert rep.conflicts[0].resolution == "branch1"
    assert not any(k == "d" or k.startswith("d/") for k in view)
    rep, view = run(tmp_path, base, [u0, u1], "ours", name="o2")
    assert view["d/x"] == b"new" and view["d/y"] == b"y"


def test_opaque_dir_replacement(tmp_path: Path, base: Path) -> None:
    u0, u1 = branches(tmp_path, base)
    u0.replace_dir("d", {"fresh": b"f"})
    u1.write("a.txt", b"A")
    _rep, view = run(tmp_path, base, [u0, u1], "fail")
    assert view["d/fresh"] == b"f" and "d/x" not in view and "d/y" not in view and view["a.txt"] == b"A"


def test_bad_arguments(tmp_path: Path, base: Path) -> None:
    u0, u1 = branches(tmp_path, base)
    with pytest.raises(InvalidInputError):
        merge_uppers([base], [u0.upper], tmp_path / "o", strategy="fail")
    with pytest.raises(InvalidInputError):
        merge_uppers([base], [u0.upper, u1.upper], tmp_path / "o", strategy="nope")
    with pytest.raises(InvalidInputError):
        merge_uppers([base], [u0.upper, u1.upper], tmp_path / "o", labels=["x", "x"])


def test_layered_view(tmp_path: Path, base: Path) -> None:
    u0 = Upper(base, tmp_path / "u0")
    u0.delete("d/x")
    u0.replace_dir("keep", {"n": b"n"})
    v = LayeredView([base, u0.upper])
    assert v.listdir("d") == ["y"] and v.listdir("keep") == ["n"] and v.stat("d/x") is None
    assert sorted(v.walk()) == sorted(model_view(base, [u0.upper]))


# ------------------------------------------------------------------ properties
NAMES = ["a", "b", "c"]
PATHS = [*NAMES, *(f"{d}/{n}" for d in NAMES for n in NAMES)]
edit_st = st.tuples(
    st.sampled_from(["write", "delete"]), st.sampled_from(PATHS), st.sampled_from([b"1", b"2", b"3"])
)
base_st = st.dictionaries(
    st.sampled_from([f"{d}/{n}" for d in NAMES for n in NAMES] + ["a"]),
    st.sampled_from([b"0", b"1"]),
    max_size=6,
)


def _base_files(files: dict[str, bytes]) -> dict[str, bytes]:
    # a top-level name cannot be both a file and a dir
    return {
        k: v for k, v in files.items() if not (("/" not in k) and any(p.startswith(k + "/") for p in files))
    }


def _apply(u: Upper, edits: list[tuple[str, str, bytes]], base_view: dict[str, object]) -> None:
    for op, path, data in edits:
        if op == "write":
            top = path.split("/")[0]
            if "/" in path and isinstance(model_view(u.base, [u.upper]).get(top), bytes):
                continue  # would need replacing a file by a dir: skip in the generator
            u.write(path, data)
        else:
            u.delete(path)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=base_st,
    edits=st.lists(st.lists(edit_st, max_size=5), min_size=2, max_size=3),
    strategy=st.sampled_from(STRATEGIES),
)
def test_properties(
    files: dict[str, bytes], edits: list[list[tuple[str, str, bytes]]], strategy: str
) -> None:
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        base = make_base(tmp / "base", _base_files(files))
        base_view = model_view(base, [])
        ups = []
        for i, e in enumerate(edits):
            u = Upper(base, tmp / f"u{i}")
            _apply(u, e, base_view)
            ups.append(u)
        views = [model_view(base, [u.upper]) for u in ups]
        out = tmp / "out"
        try:
            rep = merge_uppers([base], [u.upper for u in ups], out, strategy=strategy)
        except ConflictError as exc:
            assert strategy == "fail"
            assert exc.details["report"]["conflicts"]
            rep_ours = merge_uppers([base], [u.upper for u in ups], tmp / "ours", strategy="ours")
            assert rep_ours.conflicts  # fail raises iff there are conflicts
            return
        if strategy == "fail":
            assert rep.conflicts == []
        result = model_view(base, [out])
        paths = set(base_view) | set().union(*map(set, views))

        def changed(i: int, p: str) -> bool:
            return views[i].get(p) != base_view.get(p)

        def related(p: str, q: str) -> bool:
            # same top-level entry: a change to an ancestor (e.g. a dir replaced by a file) interacts with
            # everything below it, so "only one branch touched it" is judged per top-level subtree
            return p.split("/")[0] == q.split("/")[0]

        for p in paths:
            touched = [i for i in range(len(ups)) if any(changed(i, q) for q in paths if related(p, q))]
            if len(touched) == 1 and strategy != "intersection":
                i = touched[0]
                # a change on only one branch always appears in the result
                assert result.get(p) == views[i].get(p), (p, i)
            if not touched:
                assert result.get(p) == base_view.get(p), p
            if strategy == "intersection" and len(touched) < len(ups):
                assert result.get(p) == base_view.get(p), p
        # disjoint branches => no conflicts and every branch's changes appear
        sets = [{p for p in paths if changed(i, p)} for i in range(len(ups))]
        disjoint = all(
            not any(related(p, q) for p in sets[i] for q in sets[j])
            for i in range(len(ups))
            for j in range(i + 1, len(ups))
        )

        def exact(p: str, q: str) -> bool:
            return p == q or p.startswith(q + "/") or q.startswith(p + "/")

        # no conflict when branches touch disjoint paths (no path/ancestor overlap)
        if all(
            not any(exact(p, q) for p in sets[i] for q in sets[j])
            for i in range(len(ups))
            for j in range(i + 1, len(ups))
        ):
            assert rep.conflicts == []
        if disjoint:
            assert rep.conflicts == []
            if strategy != "intersection":
                for i in range(len(ups)):
                    for p in sets[i]:
                        assert result.get(p) == views[i].get(p)


def _materialize_view(view: dict[str, object], dest: Path) -> Path:
    dest.mkdir()
    for rel, v in sorted(view.items()):
        if v == "dir":
            (dest / rel).mkdir(exist_ok=True)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(v)  # type: ignore[arg-type]
    return dest


@settings(max_examples=80, deadline=None, database=None)
@given(files=base_st, e1=st.lists(edit_st, max_size=5), e2=st.lists(edit_st, max_size=5))
def test_flatten_equals_stacked_uppers(files: dict[str, bytes], e1: list[tuple[str, str, bytes]],
                                       e2: list[tuple[str, str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        base = make_base(tmp / "base", _base_files(files))
        u1 = Upper(base, tmp / "u1")
        _apply(u1, e1, {})
        mid = _materialize_view(model_view(base, [u1.upper]), tmp / "mid")  # what u2 was written against
        u2 = Upper(mid, tmp / "u2")
        _apply(u2, e2, {})
        flatten_uppers([base], [u1.upper, u2.upper], tmp / "flat")
        assert model_view(base, [tmp / "flat"]) == model_view(mid, [u2.upper])
