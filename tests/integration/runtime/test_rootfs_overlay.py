"""OverlayRootfs: layer order, whiteouts, opaque dirs, bounded upper (tmpfs/loop), long lowerdir, fallback."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from faasd.errors import InvalidInputError
from faasd.rootfs import OverlayRootfs, mounts
from faasd.rootfs import overlay as overlay_mod

pytestmark = pytest.mark.integration


def _layers(tmp_path: Path) -> list[Path]:
    """Three layers, lowest first: base files; a whiteout + opaque dir; an override."""
    l1, l2, l3 = (tmp_path / f"l{i}" for i in (1, 2, 3))
    (l1 / "etc").mkdir(parents=True)
    (l1 / "etc/keep").write_text("base")
    (l1 / "etc/gone").write_text("base")
    (l1 / "data/old").mkdir(parents=True)
    (l1 / "data/old/a").write_text("lower")
    (l1 / "over").write_text("l1")
    (l2 / "etc").mkdir(parents=True)
    os.mknod(l2 / "etc/gone", 0o600 | 0o020000, os.makedev(0, 0))  # whiteout
    (l2 / "data").mkdir()
    os.setxattr(l2 / "data", "trusted.overlay.opaque", b"y")
    (l2 / "data/new").write_text("l2")
    (l2 / "over").write_text("l2")
    l3.mkdir()
    (l3 / "over").write_text("l3")
    return [l1, l2, l3]


def _check_view(root: Path) -> None:
    assert (root / "etc/keep").read_text() == "base"
    assert not (root / "etc/gone").exists()
    assert sorted(os.listdir(root / "data")) == ["new"]
    assert (root / "over").read_text() == "l3"


@pytest.mark.parametrize("backend", ["tmpfs", "loop"])
def test_overlay_view_and_bounded_upper(tmp_path: Path, backend: str) -> None:
    sandbox = tmp_path / "sb"
    fs = OverlayRootfs.mount(_layers(tmp_path), sandbox, 16, backend=backend)  # type: ignore[arg-type]
    try:
        assert fs.mode == "overlay" and fs.backend == backend
        _check_view(fs.path)
        (fs.path / "etc/keep").write_text("changed")
        assert (tmp_path / "l1/etc/keep").read_text() == "base"  # lowers untouched
        assert fs.upper is not None and (fs.upper / "etc/keep").read_text() == "changed"
        with pytest.raises(OSError) as exc, open(fs.path / "big", "wb") as f:
            for _ in range(64):
                f.write(b"x" * (1 << 20))
                f.flush()
        assert exc.value.errno == errno.ENOSPC
        assert fs.usage_bytes() <= 17 << 20
    finally:
        fs.unmount()
    fs.unmount()  # idempotent
    assert mounts.mounts_under(sandbox) == []
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(sandbox) not in attached  # the loop device released itself (autoclear)
    assert not (sandbox / "rootfs").exists() and not (sandbox / "scratch.img").exists()


def test_long_lowerdir_uses_fd_paths(tmp_path: Path) -> None:
    lowers = []
    for i in range(40):
        d = tmp_path / f"layer-with-a-rather-long-directory-name-to-overflow-the-mount-data-page-{i:03d}"
        d.mkdir()
        (d / f"f{i}").write_text(str(i))
        (d / "top").write_text(str(i))
        lowers.append(d)
    assert sum(len(str(p)) + 1 for p in lowers) > 4096
    fs = OverlayRootfs.mount(lowers, tmp_path / "sb", 8)
    try:
        assert fs.mode == "overlay"
        assert (fs.path / "f0").read_text() == "0" and (fs.path / "f39").read_text() == "39"
        assert (fs.path / "top").read_text() == "39"
    finally:
        fs.unmount()


def test_copy_fallback_applies_whiteouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object) -> None:
        raise OSError(errno.EINVAL, "overlay refused (injected)")

    monkeypatch.setattr(overlay_mod, "_mount_overlay", refuse)
    fs = OverlayRootfs.mount(_layers(tmp_path), tmp_path / "sb", 16)
    try:
        assert fs.mode == "copy" and fs.upper is None
        _check_view(fs.path)
        with pytest.raises(OSError):
            os.getxattr(fs.path / "data", "trusted.overlay.opaque")
    finally:
        fs.unmount()
    assert not (tmp_path / "sb/rootfs").exists()
    with pytest.raises(Exception, match="overlay mount"):
        OverlayRootfs.mount(_layers(tmp_path / "again"), tmp_path / "sb2", 16, allow_copy_fallback=False)
    assert mounts.mounts_under(tmp_path / "sb2") == []


def test_invalid_lowers(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        OverlayRootfs.mount([], tmp_path / "sb", 8)
    with pytest.raises(InvalidInputError, match="not a directory"):
        OverlayRootfs.mount([tmp_path / "missing"], tmp_path / "sb", 8)


def test_uppers_stay_plain_trees_whatever_the_kernel_defaults(tmp_path: Path) -> None:
    """redirect_dir and metacopy are off: snapshots, merges and flattening read uppers as plain trees."""
    sandbox = tmp_path / "sb"
    fs = OverlayRootfs.mount(_layers(tmp_path), sandbox, 16, backend="tmpfs")
    try:
        assert fs.upper is not None
        # a lower directory cannot be renamed in place (that would need a redirect xattr); mv copies it
        with pytest.raises(OSError) as exc:
            os.rename(fs.path / "etc", fs.path / "etc2")
        assert exc.value.errno == errno.EXDEV
        # a chmod of a lower file copies its data up too (no metadata-only copy)
        os.chmod(fs.path / "etc/keep", 0o600)
        assert (fs.upper / "etc/keep").read_text() == "base"
        xattrs = os.listxattr(fs.upper / "etc/keep")
        assert "trusted.overlay.metacopy" not in xattrs and "trusted.overlay.redirect" not in xattrs
    finally:
        fs.unmount()
