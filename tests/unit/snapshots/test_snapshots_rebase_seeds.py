"""``rebase_upper`` (a running sandbox's upper re-expressed on top of its newest snapshot: lineage) and
branch seeds (``copy_seed``)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from faasd.errors import InvalidInputError
from faasd.snapshots.fstree import is_whiteout
from faasd.snapshots.merge import LayeredView, rebase_upper
from faasd.snapshots.seeds import copy_seed, copy_seeds

pytestmark = pytest.mark.unit


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, 0)


def _view(layers: list[Path]) -> dict[str, str | None]:
    v = LayeredView(layers)
    out: dict[str, str | None] = {}
    for rel in v.walk():
        found = v.stat(rel)
        assert found is not None
        out[rel] = found[0].read_text() if stat.S_ISREG(found[1].st_mode) else None
    return out


def test_rebase_upper_onto_the_head_keeps_only_the_changes_since(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("whiteouts (char 0/0) need root")
    image = tmp_path / "image"
    _write(image, {"etc/os": "debian", "etc/drop": "img", "data/keep": "k0"})
    upper = tmp_path / "upper"  # the running sandbox's upper at the first snapshot ...
    _write(upper, {"data/a": "1", "data/gone": "g", "data/keep2": "same", "new/x": "x"})
    (upper / "etc").mkdir()
    _whiteout(upper / "etc" / "drop")  # an image file deleted before the first snapshot
    head = tmp_path / "head"  # ... copied into the head snapshot
    subprocess.run(["cp", "-a", str(upper), str(head)], check=True)
    # later: a changed, gone removed (not in the image: no whiteout in the sandbox's upper), a dir
    # replaced by a file, a new file
    (upper / "data" / "a").write_text("2")
    (upper / "data" / "gone").unlink()
    shutil.rmtree(upper / "new")
    (upper / "new").write_text("now a file")
    _write(upper, {"data/b": "b"})

    dest = tmp_path / "rebased"
    rebase_upper([image], upper, [image, head], dest)
    assert _view([image, head, dest]) == _view([image, upper])  # the same tree the sandbox shows
    files = {
        str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir() or is_whiteout(p.lstat())
    }
    assert files == {"data/a", "data/b", "data/gone", "new"}  # nothing unchanged since the head
    assert is_whiteout((dest / "data" / "gone").lstat())
    with pytest.raises(InvalidInputError):
        rebase_upper([image], upper, [image, head], dest)  # dest exists


def test_copy_seeds_are_stable_distinct_and_optional() -> None:
    # pinned: a branch repeats across faasd versions only while this derivation stays the same
    import hashlib

    assert copy_seed(42, 0) == hashlib.sha256(b"faasd-branch-seed:42:0").hexdigest()[:32]
    assert len(copy_seed(42, 0)) == 32 and int(copy_seed(42, 0), 16) >= 0
    assert len({copy_seed(42, k) for k in range(100)}) == 100
    assert copy_seed(42, 1) != copy_seed(43, 1)
    assert copy_seeds(None, 3) == [None, None, None]
    assert copy_seeds(7, 2, first=1) == [copy_seed(7, 1), copy_seed(7, 2)]
    for bad in (-1, 2**63):
        with pytest.raises(InvalidInputError):
            copy_seed(bad, 0)
    with pytest.raises(InvalidInputError):
        copy_seed(1, -1)
