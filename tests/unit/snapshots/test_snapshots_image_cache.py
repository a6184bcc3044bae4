"""Process images of snapshots unpacked into memory (a tmpfs): budget, least recently used eviction,
pins that keep an image a restore reads, the disk fallback, and the store's use of it."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.snapshots.image_cache import ORPHAN_PREFIX, ImageCache, is_tmpfs, sweep_orphans
from faasd.snapshots.store import SnapshotMeta, SnapshotStore

pytestmark = pytest.mark.unit
SHM = Path("/dev/shm")
MiB = 1024 * 1024

if not is_tmpfs(SHM):  # pragma: no cover - every Linux this runs on has it
    pytest.skip("/dev/shm is not a tmpfs", allow_module_level=True)


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A cache dir on /dev/shm, alone in a private parent (for the orphan sweep)."""
    parent = SHM / f"faasd-test-{uuid.uuid4().hex[:10]}"
    try:
        yield parent / f"{ORPHAN_PREFIX}test"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _writer(size: int) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        dest.mkdir()
        (dest / "pages-1.img").write_bytes(b"\x01" * size)

    return write


def _touch_later(cache: ImageCache, sid: str, t: float) -> None:
    os.utime(cache.root / sid / ".complete", (t, t))


def test_is_tmpfs_tells_memory_from_disk(tmp_path: Path) -> None:
    assert is_tmpfs(SHM / "does-not-exist-yet" / "x")  # the nearest existing parent counts
    assert not is_tmpfs(tmp_path)  # the test temp dirs are on the disk


def test_fill_get_and_least_recently_used_eviction(shm_dir: Path, tmp_path: Path) -> None:
    cache = ImageCache(shm_dir, 3 * MiB, tmp_path)
    assert cache.enabled
    assert (shm_dir / ".data_dir").read_text() == str(tmp_path.resolve())
    a = cache.fill("snap-a", MiB, _writer(MiB))
    b = cache.fill("snap-b", MiB, _writer(MiB))
    assert a == shm_dir / "snap-a" / "criu" and (a / "pages-1.img").stat().st_size == MiB
    assert b is not None and cache.used_bytes() == 2 * MiB
    now = time.time()
    _touch_later(cache, "snap-a", now - 100)
    _touch_later(cache, "snap-b", now - 50)
    assert cache.get("snap-a") == a  # a use: a is now the most recent
    assert cache.fill("snap-c", 2 * MiB, _writer(2 * MiB)) is not None
    assert cache.get("snap-b") is None  # the least recently used went
    assert cache.get("snap-a") == a
    assert cache.used_bytes() == 3 * MiB
    assert list(cache.tmp_dir.iterdir()) == []  # no work dir left


def test_an_image_larger_than_the_budget_is_declined(shm_dir: Path, tmp_path: Path) -> None:
    cache = ImageCache(shm_dir, MiB, tmp_path)
    assert cache.fill("snap-big", 2 * MiB, _writer(2 * MiB)) is None
    assert cache.entries() == [] and list(cache.tmp_dir.iterdir()) == []


def test_a_pinned_entry_is_not_evicted(shm_dir: Path, tmp_path: Path) -> None:
    cache = ImageCache(shm_dir, 2 * MiB, tmp_path)
    assert cache.fill("snap-a", 2 * MiB, _writer(2 * MiB)) is not None
    with cache.pinned("snap-a") as held:
        assert held
        assert cache.drop("snap-a") is False
        assert cache.fill("snap-b", MiB, _writer(MiB)) is None  # no room: a restore reads snap-a
        assert cache.clear() is None and cache.get("snap-a") is not None
    assert cache.drop("snap-a") is True
    assert cache.get("snap-a") is None
    with cache.pinned("snap-a") as held:
        assert held is False


def test_a_pin_waiting_on_an_eviction_sees_the_entry_gone(shm_dir: Path, tmp_path: Path) -> None:
    cache = ImageCache(shm_dir, 2 * MiB, tmp_path)
    assert cache.fill("snap-a", MiB, _writer(MiB)) is not None
    fd = os.open(shm_dir / "snap-a" / ".complete", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an eviction holds the entry
    seen: list[bool] = []

    def pin() -> None:
        with cache.pinned("snap-a") as held:
            seen.append(held)

    t = threading.Thread(target=pin)
    t.start()
    time.sleep(0.2)
    assert seen == []  # waits for the eviction
    os.rename(shm_dir / "snap-a", cache.tmp_dir / "gone")
    (cache.tmp_dir / "gone" / ".complete").unlink()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(10)
    assert seen == [False]


def test_a_full_tmpfs_is_declined_and_leaves_nothing(
    shm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ImageCache(shm_dir, 4 * MiB, tmp_path)

    def full(dest: Path) -> None:
        dest.mkdir()
        (dest / "part").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    assert cache.fill("snap-a", MiB, full) is None
    assert cache.entries() == [] and list(cache.tmp_dir.iterdir()) == []


def test_disabled_when_not_on_a_tmpfs_or_without_budget(tmp_path: Path, shm_dir: Path) -> None:
    for cache in (ImageCache(tmp_path / "c", 10 * MiB, tmp_path), ImageCache(shm_dir, 0, tmp_path)):
        assert not cache.enabled
        assert cache.fill("snap-a", 1, _writer(1)) is None
        assert cache.get("snap-a") is None and cache.drop("snap-a") is True
    assert not (tmp_path / "c").exists() and not shm_dir.exists()  # nothing made


@pytest.mark.skipif(os.geteuid() != 0, reason="making a dir of another user needs root")
def test_a_dir_someone_else_made_is_not_used(shm_dir: Path, tmp_path: Path) -> None:
    shm_dir.parent.mkdir()
    shm_dir.mkdir(mode=0o777)
    os.chown(shm_dir, 65534, 65534)  # e.g. made by another user of /dev/shm before the daemon started
    cache = ImageCache(shm_dir, 4 * MiB, tmp_path)
    assert not cache.enabled and cache.fill("snap-a", 1, _writer(1)) is None
    assert os.listdir(shm_dir) == []  # nothing written there
    shm_dir.rmdir()
    elsewhere = shm_dir.parent / "theirs"  # on the tmpfs too
    elsewhere.mkdir()
    shm_dir.symlink_to(elsewhere)  # a symlink to a dir of theirs
    assert not ImageCache(shm_dir, 4 * MiB, tmp_path).enabled
    assert os.listdir(elsewhere) == []


def test_clear_sweep_and_orphans(shm_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cache = ImageCache(shm_dir, 4 * MiB, data)
    assert cache.fill("snap-a", MiB, _writer(MiB)) is not None
    stale = cache.tmp_dir / "snap-x-1234"
    stale.mkdir()
    (shm_dir / "restores" / "sb.criu-images").mkdir(parents=True)
    assert cache.sweep() == 0  # young work dirs may be in use
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert cache.sweep() == 1 and not stale.exists()
    with cache.pinned("snap-a"):
        cache.clear()  # a pinned entry stays, and so does the dir
        assert cache.get("snap-a") is not None and list((shm_dir / "restores").iterdir()) == []
    cache.clear()
    assert not shm_dir.exists()  # nothing held: the dir goes too
    assert cache.fill("snap-b", MiB, _writer(MiB)) is not None  # and comes back on demand
    assert (shm_dir / ".data_dir").read_text() == str(data.resolve())
    cache.clear()
    cache = ImageCache(shm_dir, 4 * MiB, data)
    assert sweep_orphans(shm_dir.parent) == [] and shm_dir.exists()  # its data dir exists
    assert sweep_orphans(shm_dir.parent, under=tmp_path) == [shm_dir] and not shm_dir.exists()
    other = ImageCache(shm_dir, MiB, tmp_path / "gone")
    assert other.enabled
    assert sweep_orphans(shm_dir.parent) == [shm_dir]  # its data dir does not exist


# ---------------------------------------------------------------------- the store with the cache
def _settings(tmp_path: Path, cache_dir: Path, mb: int) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        run_dir=tmp_path / "run",
        snapshot_image_cache_dir=cache_dir,
        snapshot_image_cache_mb=mb,
    )


def _snapshot(store: SnapshotStore, tmp_path: Path) -> str:
    src = tmp_path / "src"
    (src / "criu").mkdir(parents=True)
    (src / "criu" / "pages-1.img").write_bytes(os.urandom(2 * MiB))
    (src / "criu" / "core-1.img").write_bytes(b"core")
    (src / "upper" / "etc").mkdir(parents=True)
    (src / "upper" / "etc" / "f").write_text("file")
    (src / "bundle").mkdir()
    (src / "bundle" / "config.json").write_text("{}")
    snap = store.create({t: src / t for t in ("criu", "upper", "bundle")}, SnapshotMeta())
    return snap.id


def test_the_store_unpacks_process_images_into_memory(tmp_path: Path, shm_dir: Path) -> None:
    store = SnapshotStore(_settings(tmp_path, shm_dir, 16))
    sid = _snapshot(store, tmp_path)
    src_pages = (tmp_path / "src" / "criu" / "pages-1.img").read_bytes()
    mat = store.materialized(sid)
    assert mat.criu == shm_dir / sid / "criu"
    assert (mat.criu / "pages-1.img").read_bytes() == src_pages
    assert mat.upper == store.mnt_dir / sid / "upper" and (mat.upper / "etc" / "f").read_text() == "file"
    assert not (store.mnt_dir / sid / "criu").exists()  # not on disk as well
    with store.process_image(sid) as criu:
        assert criu == mat.criu
        assert store.evict(sid) is False  # a restore reads it
    assert store.evict(sid) is True
    assert store.image_cache.get(sid) is None and not (store.mnt_dir / sid).exists()
    # unpacked again on demand; deleting the snapshot gives the memory back
    assert store.materialized(sid).criu == shm_dir / sid / "criu"
    store.delete(sid)
    assert store.image_cache.entries() == []


def test_an_image_over_the_budget_is_unpacked_to_disk(tmp_path: Path, shm_dir: Path) -> None:
    store = SnapshotStore(_settings(tmp_path, shm_dir, 1))  # 1 MiB < the 2 MiB image
    sid = _snapshot(store, tmp_path)
    mat = store.materialized(sid)
    assert mat.criu == store.mnt_dir / sid / "criu"
    assert (mat.criu / "core-1.img").read_bytes() == b"core"
    with store.process_image(sid) as criu:  # nothing to pin on disk
        assert criu == mat.criu
    assert store.image_cache.entries() == []


def test_gc_drops_images_of_deleted_snapshots(tmp_path: Path, shm_dir: Path) -> None:
    store = SnapshotStore(_settings(tmp_path, shm_dir, 16))
    sid = _snapshot(store, tmp_path)
    store.materialized(sid)
    with store.image_cache.pinned(sid):
        store.delete(sid)  # pinned: delete leaves it to gc
        assert store.image_cache.get(sid) is not None
    report = store.gc()
    assert store.image_cache.entries() == [] and report.removed_materialized >= 1
