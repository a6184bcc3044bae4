"""SnapshotStore: content addressing, dedup, exact round trip, gc, rollback on ENOSPC."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from faasd.errors import ConflictError, FaasdError, InvalidInputError, NotFoundError, StorageFullError
from faasd.snapshots import blobs as blobs_mod
from faasd.snapshots import store as store_mod
from faasd.snapshots.fstree import walk_sorted
from faasd.snapshots.store import SnapshotMeta, SnapshotStore

pytestmark = pytest.mark.unit
IS_ROOT = os.geteuid() == 0


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _describe(root: Path) -> list[tuple]:
    out = []
    for rel, p, st in walk_sorted(root):
        kind = stat.S_IFMT(st.st_mode)
        content = (
            p.read_bytes()
            if stat.S_ISREG(st.st_mode)
            else (os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
        )
        xattrs = {n: os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p, follow_symlinks=False)}
        mtime = None if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode) else st.st_mtime_ns
        out.append(
            (
                rel,
                kind,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_rdev,
                content,
                sorted(xattrs.items()),
                mtime,
            )
        )
    return out


def test_round_trip_is_exact(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"a.txt": b"hello", "d/b.bin": os.urandom(10_000), "d/e/empty": b""})
    os.symlink("../a.txt", src / "d/link")
    os.link(src / "a.txt", src / "d/hard")
    os.chmod(src / "d/b.bin", 0o751)
    os.mkfifo(src / "fifo")
    os.setxattr(src / "a.txt", "user.k", b"v")
    if IS_ROOT:
        os.mknod(src / "d/gone", stat.S_IFCHR | 0o000, 0)  # overlay whiteout
        os.setxattr(src / "d/e", "trusted.overlay.opaque", b"y")
        os.chown(src / "d/b.bin", 1234, 4321)
    st = SnapshotStore(tmp_path / "store")
    snap = st.create(
        {"upper": src},
        SnapshotMeta(function="f", image_ref="img:1", layers=["/l1"], limits={"memory_mb": 64}),
    )
    got = st.get(snap.id)
    assert got.meta.function == "f" and got.meta.limits == {"memory_mb": 64}
    assert got.sizes.logical_bytes == 5 + 10_000
    mat = st.materialize(snap.id, tmp_path / "out")
    assert mat.upper is not None and mat.criu is None
    assert _describe(mat.upper) == _describe(src)
    out = mat.upper
    assert os.stat(out / "a.txt").st_ino == os.stat(out / "d/hard").st_ino
    if IS_ROOT:
        assert os.stat(out / "d/gone").st_rdev == 0


def test_dedup_across_files_and_snapshots(tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024)
    a = _tree(tmp_path / "a", {"pages-1.img": big, "copy.img": big, "x": b"1"})
    b = _tree(tmp_path / "b", {"pages-1.img": big, "x": b"2"})
    st = SnapshotStore(tmp_path / "store")
    s1 = st.create({"criu": a})
    assert s1.sizes.chunks == 2  # big stored once + "1"
    s2 = st.create({"criu": b})
    assert s2.sizes.new_bytes < 100  # only "2" is new
    blobs = [p for sub in st.blobs_dir.iterdir() for p in sub.iterdir()]
    assert len(blobs) == 3


def test_large_file_chunks(tmp_path: Path) -> None:
    data = os.urandom(store_mod.CHUNK_SIZE * 2 + 17)
    a = _tree(tmp_path / "a", {"big": data})
    st = SnapshotStore(tmp_path / "store")
    s = st.create({"criu": a})
    assert len(next(e for e in s.trees["criu"] if e.path == "big").chunks) == 3
    assert (st.materialize(s.id, tmp_path / "o").criu / "big").read_bytes() == data  # type: ignore[operator]


def test_a_damaged_chunk_of_a_large_file_fails_the_write_back(tmp_path: Path) -> None:
    import zstandard

    data = os.urandom(store_mod.CHUNK_SIZE * 2 + 17)
    st = SnapshotStore(tmp_path / "store")
    s = st.create({"criu": _tree(tmp_path / "a", {"big": data})})
    chunks = next(e for e in s.trees["criu"] if e.path == "big").chunks
    st.blob_path(chunks[0]).write_bytes(zstandard.ZstdCompressor().compress(b"short"))  # not a whole chunk
    with pytest.raises(FaasdError, match=r"holds 5 bytes.*store damaged"):
        st.materialize(s.id, tmp_path / "o")
    st.blob_path(chunks[0]).unlink()
    with pytest.raises(FaasdError, match="is missing"):
        st.materialize(s.id, tmp_path / "o2")


def test_list_delete_gc(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "store")
    s1 = st.create({"upper": _tree(tmp_path / "a", {"shared": b"s" * 1000, "only1": b"1" * 1000})})
    s2 = st.create({"upper": _tree(tmp_path / "b", {"shared": b"s" * 1000})}, SnapshotMeta(parent=s1.id))
    assert [s.id for s in st.list()] == [s1.id, s2.id]
    assert [s.id for s in st.chain(s2.id)] == [s1.id, s2.id]
    with pytest.raises(ConflictError):
        st.delete(s1.id)
    st.delete(s2.id)
    assert st.gc().removed_blobs == 0  # everything of s2 is shared with s1
    st.delete(s1.id)
    rep = st.gc()
    assert rep.removed_blobs == 2 and rep.kept_blobs == 0
    with pytest.raises(NotFoundError):
        st.get(s1.id)
    with pytest.raises(NotFoundError):
        st.get("../etc/passwd")


def test_materialized_cache_is_shared(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "store")
    s = st.create({"upper": _tree(tmp_path / "a", {"f": b"x"})})
    m1 = st.materialized(s.id)
    m2 = st.materialized(s.id)
    assert m1.upper == m2.upper and (m1.upper / "f").read_bytes() == b"x"  # type: ignore[operator]
    assert st.snapshot_of_lower(m1.upper) == s.id  # type: ignore[arg-type]
    assert st.snapshot_of_lower(tmp_path) is None
    holder = tmp_path / "sandbox-bundle"
    holder.mkdir()
    st.lease(s.id, holder)
    st.delete(s.id)
    assert st.gc().removed_materialized == 0  # still leased by an existing holder
    assert (m1.upper / "f").exists()  # type: ignore[operator]
    holder.rmdir()
    assert st.gc().removed_materialized == 1
    assert not m1.root.exists()


def test_invalid_inputs(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "store")
    with pytest.raises(InvalidInputError):
        st.create({"weird": tmp_path})
    with pytest.raises(InvalidInputError):
        st.create({"upper": tmp_path / "missing"})
    with pytest.raises(NotFoundError):
        st.create({"upper": _tree(tmp_path / "a", {})}, SnapshotMeta(parent="snap-nope"))


def test_enospc_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = SnapshotStore(tmp_path / "store")
    keep = st.create({"upper": _tree(tmp_path / "k", {"kept": b"k" * 100})})
    files = {f"f{i}": os.urandom(1000) for i in range(5)}
    files["big"] = os.urandom(store_mod.CHUNK_SIZE * 3)  # several chunks in flight on the pool
    src = _tree(tmp_path / "a", files | {"kept": b"k" * 100})
    calls = {"n": 0}
    real = blobs_mod.BlobStore._store_chunk

    def failing(self, chunk):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, chunk)

    monkeypatch.setattr(blobs_mod.BlobStore, "_store_chunk", failing)
    with pytest.raises(StorageFullError):
        st.create({"upper": src})
    assert [s.id for s in st.list()] == [keep.id]
    blobs = [p for sub in st.blobs_dir.iterdir() for p in sub.iterdir()]
    assert len(blobs) == 1  # only the blob of the surviving snapshot
    assert list(st.tmp_dir.iterdir()) == []


def test_a_restore_leases_every_link_of_its_chain(tmp_path: Path) -> None:
    from faasd.snapshots.service import _chain_lowers

    st = SnapshotStore(tmp_path / "store")
    root = st.create({"upper": _tree(tmp_path / "a", {"f": b"root"})}, SnapshotMeta(layers=["/layer/0"]))
    child = st.create({"upper": _tree(tmp_path / "b", {"g": b"child"})}, SnapshotMeta(parent=root.id))
    holder = tmp_path / "sandbox-bundle"
    holder.mkdir()
    lowers, mat = _chain_lowers(st, child.id, holder)
    assert lowers == [Path("/layer/0"), st.materialized(root.id).upper, st.materialized(child.id).upper]
    assert mat.root == st.materialized(child.id).root
    st.delete(child.id)
    st.delete(root.id)
    assert st.gc().removed_materialized == 0  # both links kept while the restored sandbox exists
    assert all((p / n).exists() for p, n in zip(lowers[1:], ("f", "g"), strict=True))
    holder.rmdir()
    assert st.gc().removed_materialized == 2


def test_equal_files_stored_together_count_one_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal chunks of several files are in flight at once (renames slowed down so that several workers
    find the blob missing and write it): one blob, counted once, and every file comes back."""
    real_rename = os.rename

    def slow_rename(src: str | Path, dst: str | Path) -> None:
        time.sleep(0.05)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", slow_rename)
    files = {f"same-{i}": b"x" * 1000 for i in range(12)} | {f"empty-{i}": b"" for i in range(12)}
    st = SnapshotStore(tmp_path / "store", threads=4)
    snap = st.create({"upper": _tree(tmp_path / "a", files)})
    assert snap.sizes.chunks == 2  # the 1000 x's and the empty chunk
    blobs = [st.blob_path(d) for d in snap.digests()]
    assert snap.sizes.new_bytes == sum(b.stat().st_size for b in blobs)
    out = st.materialized(snap.id).upper
    assert out is not None
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
