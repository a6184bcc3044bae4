"""Real overlayfs mounts of unpacked layers, and archives made by skopeo / umoci."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import StorageFullError
from faasd.images import ImageConfig, ImageStore
from fixtures import images as tb
from fixtures.images import F

pytestmark = pytest.mark.integration


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{args} failed: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def store(settings: Settings) -> ImageStore:
    return ImageStore(settings)


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[list[Path]]:
    mounts: list[Path] = []
    yield mounts
    for mnt in mounts:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def _mount(lowers: list[Path], target: Path, mounts: list[Path]) -> Path:
    """Read-only overlay of lowers (lowest first), as faasd.rootfs will do it (lowerdir order reversed)."""
    target.mkdir(parents=True)
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowers))
    _run("mount", "-t", "overlay", "overlay", "-o", opts, str(target))
    mounts.append(target)
    return target


def _listing(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            out[rel] = "dir" if p.is_dir() and not p.is_symlink() else p.read_text(errors="replace")
    return out


def test_overlay_merged_view_shows_deletions_and_opaque_dirs(
    store: ImageStore, tmp_path: Path, overlay: list[Path]
) -> None:
    image = store.import_archive(
        tb.write_docker_archive(tb.three_layer_image(), tmp_path / "d.tar"), ref="ov:1"
    )
    merged = _mount(store.layer_dirs(image), tmp_path / "merged", overlay)
    view = _listing(merged)
    assert set(view) == {
        "etc",
        "etc/keep",
        "etc/added",
        "etc/gone",
        "data",
        "data/new",
        "olddir",
        "olddir/y",
        "lib",
        "lib/libx.so",
        "bin",
        "bin/tool",
        "bin/tool2",
    }
    assert view["etc/gone"] == "v2"  # re-added after deletion
    assert not (merged / "data/a").exists() and not (merged / "olddir/x").exists()
    assert os.stat(merged / "bin/tool").st_mode & 0o4000
    # two lowers only: layer 1's whiteouts hide layer 0's content
    merged2 = _mount(store.layer_dirs(image)[:2], tmp_path / "merged2", overlay)
    assert set(_listing(merged2)) == {
        "etc",
        "etc/keep",
        "etc/added",
        "data",
        "data/new",
        "lib",
        "lib/libx.so",
        "bin",
        "bin/tool",
        "bin/tool2",
    }


def test_overlay_with_writable_upper(store: ImageStore, tmp_path: Path, overlay: list[Path]) -> None:
    image = store.import_archive(tb.write_oci_layout(tb.three_layer_image(), tmp_path / "o"), ref="ov:2")
    lowers = store.layer_dirs(image)
    upper, work, target = tmp_path / "upper", tmp_path / "work", tmp_path / "m"
    for d in (upper, work, target):
        d.mkdir()
    opts = f"lowerdir={':'.join(str(p) for p in reversed(lowers))},upperdir={upper},workdir={work}"
    _run("mount", "-t", "overlay", "overlay", "-o", opts, str(target))
    overlay.append(target)
    (target / "etc/keep").unlink()
    (target / "data/new2").write_text("x")
    assert not (target / "etc/keep").exists()
    assert (lowers[0] / "etc/keep").read_text() == "keep"  # lowers stay untouched


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_docker_archive_imports(store: ImageStore, tmp_path: Path, overlay: list[Path]) -> None:
    img = tb.three_layer_image()
    layout = tb.write_oci_layout(img, tmp_path / "oci", ref_name="latest")
    archive = tmp_path / "sko.tar"
    _run(
        "skopeo", "--insecure-policy", "copy", f"oci:{layout}:latest", f"docker-archive:{archive}:sko/test:1"
    )
    image = store.import_archive(archive)
    assert image.refs == ["sko/test:1"] and image.id == img.config_digest
    merged = _mount(store.layer_dirs(image), tmp_path / "m", overlay)
    assert _listing(merged)["etc/gone"] == "v2" and not (merged / "data/a").exists()
    # and skopeo's OCI archive output
    oarch = tmp_path / "sko-oci.tar"
    _run("skopeo", "--insecure-policy", "copy", f"oci:{layout}:latest", f"oci-archive:{oarch}:sko/oci:2")
    assert store.import_archive(oarch, ref="sko/oci:2").id == img.config_digest


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_our_export_is_readable_by_skopeo(store: ImageStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("hi")
    image = store.create_image(src, ImageConfig(cmd=["/hello"]), ref="exp/test:3")
    out = store.export_oci_archive("exp/test:3", tmp_path / "exp.tar")
    info = _run("skopeo", "inspect", "--config", f"oci-archive:{out}")
    assert '"/hello"' in info
    copy = tmp_path / "copy"
    _run("skopeo", "--insecure-policy", "copy", f"oci-archive:{out}", f"oci:{copy}:t")
    other = ImageStore(Settings(data_dir=tmp_path / "d2", run_dir=tmp_path / "r2"))
    assert other.import_archive(copy).id == image.id


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed")
def test_umoci_layout_imports(store: ImageStore, tmp_path: Path, overlay: list[Path]) -> None:
    layout = tmp_path / "um"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:t")
    src = tmp_path / "app"
    (src / "bin").mkdir(parents=True)
    (src / "bin/run").write_text("#!/bin/sh\necho ok\n")
    (src / "gone").write_text("soon deleted")
    _run("umoci", "insert", "--image", f"{layout}:t", str(src), "/app")
    _run("umoci", "insert", "--image", f"{layout}:t", "--whiteout", "/app/gone")
    _run("umoci", "config", "--image", f"{layout}:t", "--config.cmd", "/app/bin/run", "--config.env", "K=v")
    image = store.import_archive(layout, ref="umoci/t:1")
    assert image.config.cmd == ["/app/bin/run"] and "K=v" in image.config.env
    merged = _mount(store.layer_dirs(image), tmp_path / "m", overlay)
    assert (merged / "app/bin/run").read_text().startswith("#!/bin/sh")
    assert not (merged / "app/gone").exists()


def test_real_enospc_rolls_back(tmp_path: Path) -> None:
    """A data dir on a tiny tmpfs: the import fails with StorageFullError and leaves nothing."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt))
    try:
        store = ImageStore(Settings(data_dir=mnt / "data", run_dir=tmp_path / "run"))
        big = tb.build_image([[F("a", "small")], [F("big", os.urandom(3 * 1024 * 1024))]])
        with pytest.raises(StorageFullError, match="no space left"):
            store.import_archive(tb.write_docker_archive(big, tmp_path / "big.tar"), ref="big:1")
        left = tb.leftovers(store)
        assert left == {"images": [], "refs": [], "blobs": [], "layers": [], "ingest": []}
        # a small (compressed) blob that does not fit once unpacked: fails while extracting
        zeros = tb.build_image([[F("a", "small")], [F("zeros", b"\0" * (3 * 1024 * 1024))]])
        with pytest.raises(StorageFullError, match="unpacking"):
            store.import_archive(tb.write_docker_archive(zeros, tmp_path / "zeros.tar"), ref="zeros:1")
        assert tb.leftovers(store) == left
        # the store still works once there is room
        ok = store.import_archive(
            tb.write_docker_archive(tb.build_image([[F("a", "small")]]), tmp_path / "s.tar"), ref="small:1"
        )
        assert (store.layer_dirs(ok)[0] / "a").read_text() == "small"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _cached_base(settings: Settings, name: str) -> Path:
    found = sorted((settings.cache_dir / "base").glob(f"{name}-*.tar"))
    if not found:
        pytest.skip(
            f"no cached {name} base archive in {settings.cache_dir}/base (faas image build-base {name})"
        )
    return found[-1]


@pytest.mark.slow
def test_base_archive_plus_source_layer_runs(store: ImageStore, tmp_path: Path, overlay: list[Path]) -> None:
    """A real debootstrap/umoci base archive + a source-deploy layer, run through an overlay mount."""
    base = store.import_archive(_cached_base(store.settings, "python"), ref="it/python-base:1")
    src = tmp_path / "src"
    src.mkdir()
    (src / "handler.py").write_text("import sys, json\nprint(json.dumps({'ok': sys.version_info[0]}))\n")
    fn = store.add_layer(
        "it/python-base:1",
        src,
        dest="/function",
        ref="it/fn:1",
        config_overrides={"cmd": ["python3", "/function/handler.py"], "working_dir": "/function"},
    )
    assert fn.layers[: len(base.layers)] == base.layers
    merged = _mount(store.layer_dirs(fn), tmp_path / "m", overlay)
    out = _run("chroot", str(merged), *fn.config.cmd)
    assert out.strip() == '{"ok": 3}'
