"""Base images for real: debootstrap (or the cached archive), the image store, chroot smoke tests,
and the failure/interrupt paths of the builder (no leftovers: build dirs, mounts, processes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faasd.baseimages import (
    LABEL_RECIPE_HASH,
    RECIPES,
    archive_path,
    build_archive,
    build_base,
    ensure_base_images,
)
from faasd.config import Settings
from faasd.errors import RuntimeFailure
from fixtures.signals import default_sigint

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SHARED_DEBS = Path("/var/cache/faasd/base/debs")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


@pytest.fixture
def store(settings: Settings) -> Any:
    from faasd.images.store import ImageStore

    return ImageStore(settings)


def _rootfs(store: Any, image: Any) -> Path:
    dirs = store.layer_dirs(image)
    assert len(dirs) == 1, "a base image is a single layer"
    return Path(dirs[0])


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(path))]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture
def private_cache(tmp_path: Path) -> Iterator[Path]:
    """An empty cache dir whose .deb cache is seeded (hard links) from the shared one, if any."""
    cache = tmp_path / "cache"
    (cache / "base").mkdir(parents=True)
    if SHARED_DEBS.is_dir():
        subprocess.run(["cp", "-al", str(SHARED_DEBS), str(cache / "base" / "debs")], check=False)
    yield cache
    for mnt in sorted(_mounts_under(cache), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)


def test_ensure_gives_working_trimmed_python_and_node(store: Any, settings: Settings) -> None:
    events: list[tuple[str, str]] = []
    images = ensure_base_images(store, progress=lambda p, m: events.append((p, m)))
    assert set(images) == {"python", "node"}
    assert any(p == "import" for p, _ in events)

    for name, binary in (("python", "usr/bin/python3"), ("node", "usr/bin/node")):
        recipe, image = RECIPES[name], images[name]
        assert set(recipe.refs) <= set(image.refs)
        assert store.get(recipe.refs[0]).id == store.get(recipe.refs[1]).id == image.id
        cfg = image.config
        assert cfg.labels[LABEL_RECIPE_HASH] == recipe.recipe_hash()
        assert cfg.labels["org.faasd.base.version"].startswith(recipe.version_tag + ".")
        assert cfg.labels["org.opencontainers.image.created"]
        assert "LANG=C.UTF-8" in cfg.env and any(e.startswith("PATH=") for e in cfg.env)
        assert cfg.cmd == list(recipe.cmd) and cfg.working_dir == "/"

        root = _rootfs(store, image)
        assert os.path.lexists(root / binary) and (root / binary).resolve(strict=False)
        # trimmed: no man pages, no translations, no docs but copyright files, no apt lists/caches
        assert not (root / "usr/share/man").exists()
        assert [p.name for p in (root / "usr/share/locale").iterdir()] in ([], ["locale.alias"])
        docs = [p for p in (root / "usr/share/doc").rglob("*") if not p.is_dir()]
        assert docs and all(p.name == "copyright" for p in docs)
        assert list((root / "var/lib/apt/lists").iterdir()) == []
        assert not list((root / "var/cache/apt").glob("*.bin"))
        assert not list((root / "var/cache/apt/archives").glob("*.deb"))
        assert list((root / "dev").iterdir()) == []
        assert (root / "etc/resolv.conf").read_text() == ""
        assert (root / "usr/lib/locale/C.utf8").is_dir()

    # the images work: run their interpreters with chroot (no runc needed); write nothing into the layer
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    py = subprocess.run(
        [
            CHROOT,
            str(_rootfs(store, images["python"])),
            "python3",
            "-c",
            "import json, ssl, sqlite3; print(1 + 1, ssl.OPENSSL_VERSION.split()[0])",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert py.returncode == 0, py.stderr
    assert py.stdout.split() == ["2", "OpenSSL"]
    node = subprocess.run(
        [
            CHROOT,
            str(_rootfs(store, images["node"])),
            "node",
            "-e",
            "console.log(JSON.stringify({v: process.versions.node.split('.')[0], s: 6 * 7}))",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert node.returncode == 0, node.stderr
    assert node.stdout.strip() == '{"v":"18","s":42}'


def test_second_ensure_neither_rebuilds_nor_reimports(store: Any, settings: Settings, tmp_path: Path) -> None:
    first = ensure_base_images(store)
    archives = {n: archive_path(RECIPES[n], settings.cache_dir) for n in first}
    mtimes = {n: a.stat().st_mtime_ns for n, a in archives.items()}

    events: list[tuple[str, str]] = []
    again = ensure_base_images(store, progress=lambda p, m: events.append((p, m)))
    assert {n: i.id for n, i in again.items()} == {n: i.id for n, i in first.items()}
    assert [p for p, _ in events] == ["check", "check"]
    assert all("up to date" in m for _, m in events)

    # a fresh store (another data dir, same cache) imports the cached archives, no debootstrap
    from faasd.images.store import ImageStore

    other = Settings(
        data_dir=tmp_path / "other-data", run_dir=tmp_path / "other-run", cache_dir=settings.cache_dir
    )
    events.clear()
    imported = ensure_base_images(ImageStore(other), progress=lambda p, m: events.append((p, m)))
    assert {n: i.id for n, i in imported.items()} == {n: i.id for n, i in first.items()}
    assert not any(p == "debootstrap" for p, _ in events)
    assert {n: a.stat().st_mtime_ns for n, a in archives.items()} == mtimes

    # build_base without rebuild is the same image
    assert build_base("python", store).id == first["python"].id
    assert archives["python"].stat().st_mtime_ns == mtimes["python"]


def test_debootstrap_failure_is_a_runtime_failure_with_its_log(private_cache: Path) -> None:
    recipe = RECIPES["python"]
    with pytest.raises(RuntimeFailure) as info:
        # a loopback port nothing listens on: the download fails at once
        build_archive(recipe, private_cache, rebuild=True, mirror="http://127.0.0.1:9/debian")
    msg = info.value.message
    assert "debootstrap of base image 'python' failed" in msg
    assert "127.0.0.1:9" in msg and "FAASD_DEBIAN_MIRROR" in msg
    assert "Release" in msg  # the tail of debootstrap's own output
    assert info.value.details["exit_code"] != 0
    base = private_cache / "base"
    assert sorted(p.name for p in base.iterdir()) == [".lock", "debs"]
    assert _mounts_under(private_cache) == []


def test_interrupted_build_leaves_no_dir_mount_or_process(private_cache: Path) -> None:
    """Ctrl-C while debootstrap has proc/sys mounted inside the target: everything is cleaned up."""
    env = dict(os.environ, FAASD_CACHE_DIR=str(private_cache), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "faasd.baseimages", "build", "python", "--rebuild"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 300
        while not _mounts_under(private_cache / "base"):
            assert proc.poll() is None, f"builder exited early: {proc.stdout.read() if proc.stdout else ''}"
            assert time.monotonic() < deadline, "debootstrap never mounted anything in the target"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    base = private_cache / "base"
    assert not [p.name for p in base.iterdir() if p.name.startswith((".build-", ".tmp-"))]
    assert not list(base.glob("python-*.tar"))
    assert _mounts_under(private_cache) == []
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(private_cache)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(private_cache)) == []


def test_rebuild_in_a_private_cache_replaces_the_archive_atomically(private_cache: Path) -> None:
    """A full build (node is the smaller download once debs are cached); the archive appears only
    complete, and a rebuild replaces it while the old recipe's archives are dropped."""
    recipe = RECIPES["node"]
    stale = private_cache / "base" / "node-0123456789abcdef.tar"
    stale.write_bytes(b"old recipe")
    result = build_archive(recipe, private_cache, rebuild=True)
    assert result.built and result.archive == archive_path(recipe, private_cache)
    assert result.version.startswith("18.")
    assert result.archive_bytes == result.archive.stat().st_size > 10_000_000
    assert not stale.exists()
    names = sorted(p.name for p in (private_cache / "base").iterdir())
    assert names == [".lock", "debs", result.archive.name]
    again = build_archive(recipe, private_cache)
    assert again.built is False and again.archive.stat().st_mtime_ns == result.archive.stat().st_mtime_ns
