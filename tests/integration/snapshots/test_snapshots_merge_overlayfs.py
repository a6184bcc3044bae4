"""Merge against uppers written by the real kernel overlayfs, result checked through a real overlay mount."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from faasd.errors import ConflictError
from faasd.snapshots.merge import merge_uppers

pytestmark = pytest.mark.integration


@contextmanager
def overlay(tmp: Path, lowers: list[Path], upper: Path | None, name: str) -> Iterator[Path]:
    merged = tmp / f"{name}-merged"
    merged.mkdir()
    lower = ":".join(str(p) for p in reversed(lowers))
    if upper is None:
        opts = f"lowerdir={lower}"
    else:
        work = tmp / f"{name}-work"
        work.mkdir()
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def view(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else p.read_text()
    return out


@pytest.fixture
def base(tmp_path: Path) -> Path:
    b = tmp_path / "base"
    files = {"a.txt": "a", "b.txt": "b", "d/x": "x", "d/y": "y", "keep/k": "k", "rmme/z": "z"}
    for rel, text in files.items():
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text(text)
    return b


def test_kernel_uppers_merge(tmp_path: Path, base: Path) -> None:
    u0, u1 = tmp_path / "u0", tmp_path / "u1"
    u0.mkdir()
    u1.mkdir()
    with overlay(tmp_path, [base], u0, "b0") as m:
        (m / "a.txt").write_text("A0")
        (m / "b.txt").unlink()
        shutil.rmtree(m / "d")
        (m / "d").mkdir()  # the kernel makes this an opaque dir
        (m / "d/n").write_text("n0")
        (m / "new0").mkdir()
        (m / "new0/f").write_text("f0")
    with overlay(tmp_path, [base], u1, "b1") as m:
        (m / "keep/k").write_text("K1")
        (m / "d/w").write_text("w1")
        shutil.rmtree(m / "rmme")
    out = tmp_path / "merged-upper"
    report = merge_uppers([base], [u0, u1], out, strategy="fail", labels=["b0", "b1"])
    assert report.conflicts == []
    with overlay(tmp_path, [base, out], None, "result") as m:
        got = view(m)
    assert got == {
        "a.txt": "A0",
        "d": "dir",
        "d/n": "n0",
        "d/w": "w1",
        "keep": "dir",
        "keep/k": "K1",
        "new0": "dir",
        "new0/f": "f0",
    }


def test_kernel_uppers_conflict(tmp_path: Path, base: Path) -> None:
    uppers = []
    for i in range(3):
        u = tmp_path / f"u{i}"
        u.mkdir()
        with overlay(tmp_path, [base], u, f"b{i}") as m:
            (m / "a.txt").write_text(f"A{i}")
            (m / f"only{i}").write_text(str(i))
            if i == 2:
                (m / "keep/k").unlink()
            if i == 1:
                (m / "keep/k").write_text("K1")
        uppers.append(u)
    with pytest.raises(ConflictError) as info:
        merge_uppers([base], uppers, tmp_path / "o-fail", strategy="fail")
    kinds = sorted((c["path"], c["kind"]) for c in info.value.details["report"]["conflicts"])
    assert kinds == [("a.txt", "both-modified"), ("keep/k", "modify/delete")]
    merge_uppers([base], uppers, tmp_path / "o-union", strategy="union", labels=["x", "y", "z"])
    with overlay(tmp_path, [base, tmp_path / "o-union"], None, "ru") as m:
        got = view(m)
    assert got["a.txt"] == "A0" and got["a.txt.conflict-y"] == "A1" and got["a.txt.conflict-z"] == "A2"
    assert got["keep/k"] == "K1"  # y changed it, z deleted it: first side wins (y); deletions leave no copy
    assert {got["only0"], got["only1"], got["only2"]} == {"0", "1", "2"}
