"""faasd's CRIU patch 0004 (scripts/criu-patches/0004-tmpfs-skeleton.patch): a tmpfs that is only a skeleton
(directories, empty files, symlinks: a sandbox's /dev and /sys/fs/cgroup) is dumped and restored by CRIU
in-process, with no tar run, as a tar.gz that GNU tar still reads; a tmpfs with content still goes through
tar; a hostile skeleton image fails the restore without creating anything."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from faasd.errors import RuntimeFailure
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed"),
]

MARKER = b"faasd-tmpfs-skeleton-v1"
SKELETON_LINE = re.compile(r"faasd-tmpfs-skeleton-v1: tmpfs \d+: skeleton of \d+ entries, no tar")

# Prints a line every 20 ms; with WRITE=1 first puts content in two tmpfs (/dev/shm and /tmp).
PROG = r"""
import os, time
if os.environ.get("WRITE") == "1":
    with open("/dev/shm/payload", "w") as f:
        f.write("shm payload\n" * 200)
    os.makedirs("/tmp/d", exist_ok=True)
    with open("/tmp/d/f", "w") as f:
        f.write("tmp content\n")
n = 0
while True:
    n += 1
    print(n, flush=True)
    time.sleep(0.02)
"""


@pytest.fixture
async def env(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str]
) -> AsyncIterator[dict[str, Any]]:
    manager = SandboxManager(settings)

    def new_id(tag: str) -> str:
        sid = f"fd-{unique_id}-{tag}"
        no_leaks.append(sid)
        return sid

    yield {"manager": manager, "store": SnapshotStore(settings), "new_id": new_id, "rootfs": python_rootfs}
    for sb in list(manager._sandboxes.values()):
        await sb.destroy()


async def start(env: dict[str, Any], tag: str, write: bool = False) -> Sandbox:
    spec = SandboxSpec(
        id=env["new_id"](tag),
        lowers=[env["rootfs"]],
        args=["python3", "-c", PROG],
        env={"WRITE": "1"} if write else {},
        limits=Limits(memory_mb=128, disk_mb=64, timeout_s=None),
    )
    sb = await env["manager"].create(spec, stdin_pipe=False)
    await sb.start()
    for _ in range(500):
        if sb.stdout().count(b"\n") >= 3:
            break
        await asyncio.sleep(0.02)
    assert sb.stdout().count(b"\n") >= 3, sb.stderr()
    return sb


def has_marker(data: bytes) -> bool:
    # gzip, deflate, FLG = FCOMMENT only, then the zero-terminated comment
    return data[:4] == b"\x1f\x8b\x08\x10" and data[10 : 11 + len(MARKER)] == MARKER + b"\0"


def tmpfs_images(criu_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(criu_dir.glob("tmpfs-dev-*.tar.gz.img"))}


def gnu_tar_list(image: Path) -> list[str]:
    res = subprocess.run(
        ["tar", "-tvzf", str(image), "--numeric-owner"], capture_output=True, text=True, check=True
    )
    return res.stdout.splitlines()


def members(data: bytes) -> list[tuple[str, bytes, int, int, int, int, str, int]]:
    """What an image holds, order aside: name, type, mode, owner, mtime, link target, size."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        return sorted(
            (m.name, m.type, m.mode, m.uid, m.gid, int(m.mtime), m.linkname, m.size) for m in tf.getmembers()
        )


def dev_image(images: dict[Path, bytes]) -> Path:
    """The image of the sandbox's /dev: the one with ./null and ./ptmx in it."""
    found = [p for p, d in images.items() if {"./null", "./ptmx"} <= {m[0] for m in members(d)}]
    assert len(found) == 1, [p.name for p in images]
    return found[0]


def id_map(pid: int, kind: str) -> Callable[[int], int]:
    rows = [
        tuple(map(int, line.split())) for line in Path(f"/proc/{pid}/{kind}_map").read_text().splitlines()
    ]

    def inside(host: int) -> int:
        for first, lower, count in rows:
            if lower <= host < lower + count:
                return first + host - lower
        return -1

    return inside


def tmpfs_tree(pid: int, path: str) -> list[tuple[str, int, int, int, int, int, str]]:
    """The tmpfs at ``path`` as the sandbox sees it, without what is mounted on it: name, type, mode,
    owner in the sandbox's user namespace, mtime in seconds (what tar keeps), link target."""
    root = f"/proc/{pid}/root{path}"
    covered = {
        os.path.relpath(line.split()[4], path)
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(path + "/")
    }
    uid, gid = id_map(pid, "uid"), id_map(pid, "gid")
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(dirpath, d), root) not in covered]
        for name in ([""] if dirpath == root else []) + dirs + files:
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(p, root)
            if rel in covered:
                continue
            st = os.lstat(p)
            out.append(
                (
                    rel,
                    stat.S_IFMT(st.st_mode),
                    stat.S_IMODE(st.st_mode),
                    uid(st.st_uid),
                    gid(st.st_gid),
                    int(st.st_mtime),
                    os.readlink(p) if stat.S_ISLNK(st.st_mode) else "",
                )
            )
    return sorted(out)


def skeleton_gzip(data: bytes) -> bytes:
    """A gzip of stored deflate blocks with the skeleton marker, as the patch writes one."""
    co = zlib.compressobj(level=0, wbits=-15)
    body = co.compress(data) + co.flush()
    header = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\x03" + MARKER + b"\0"
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def gnu_tar(entries: list[tuple[str, bytes, str]]) -> bytes:
    """A GNU-format tar of (name, type, link target) entries of size 0, owner 0/0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, target in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mtime = kind, target, 1700000000
            ti.mode = {tarfile.DIRTYPE: 0o755, tarfile.SYMTYPE: 0o777}.get(kind, 0o644)
            tf.addfile(ti)
    return buf.getvalue()


async def test_dev_and_cgroup_tmpfs_are_dumped_and_restored_without_tar(
    env: dict[str, Any], criu_log: Callable[[str], str]
) -> None:
    store: SnapshotStore = env["store"]
    src = await start(env, "src")
    snap = await snapshot_sandbox(store, src)
    # /dev and /sys/fs/cgroup: skeletons written by CRIU itself
    dumped = SKELETON_LINE.findall(criu_log("dump.log"))
    assert len(dumped) >= 2, (
        "criu lacks scripts/criu-patches/0004-tmpfs-skeleton.patch: run scripts/setup-system.sh"
    )
    criu_dir = store.materialized(snap.id).criu
    assert criu_dir is not None
    images = tmpfs_images(criu_dir)
    skeletons = {p: d for p, d in images.items() if has_marker(d)}
    assert len(skeletons) == len(dumped)
    # ... that GNU tar reads (so an unpatched CRIU restores them too)
    dev = dev_image(skeletons)
    listing = gnu_tar_list(dev)
    assert re.match(r"^drwx\S* 0/0 +0 .* \./$", listing[0]), listing
    assert any(re.match(r"^lrwxrwxrwx 0/0 +0 .* \./fd -> /proc/self/fd$", line) for line in listing), listing
    assert any(re.match(r"^-\S+ 0/0 +0 .* \./null$", line) for line in listing), listing
    assert any(re.match(r"^d\S+ 0/0 +0 .* \./pts/$", line) for line in listing), listing
    for p in skeletons:
        assert len(gnu_tar_list(p)) == len(members(skeletons[p]))

    restored = await restore_snapshot(store, snap.id, env["new_id"]("r1"), manager=env["manager"])
    copy = restored.sandbox
    assert len(SKELETON_LINE.findall(criu_log("restore.log"))) == len(skeletons)
    assert src.pid is not None and copy.pid is not None
    for path in ("/dev", "/sys/fs/cgroup"):
        assert tmpfs_tree(copy.pid, path) == tmpfs_tree(src.pid, path), path
    # what the mounts cover too (mountpoint dirs, the files devices are bound on): a dump of the copy
    # holds the same entries, modes, owners, mtimes and link targets as the source's
    again = await snapshot_sandbox(store, copy, lineage=False)
    criu_again = store.materialized(again.id).criu
    assert criu_again is not None
    assert sorted(members(d) for d in tmpfs_images(criu_again).values()) == sorted(
        members(d) for d in images.values()
    )
    await copy.destroy()
    await src.destroy()


async def test_tmpfs_with_content_still_goes_through_tar(
    env: dict[str, Any], criu_log: Callable[[str], str]
) -> None:
    store: SnapshotStore = env["store"]
    src = await start(env, "src", write=True)
    snap = await snapshot_sandbox(store, src)
    dump_log = criu_log("dump.log")
    assert len(re.findall(r"faasd-tmpfs-skeleton-v1: tmpfs \d+ is not a skeleton, tar", dump_log)) >= 2
    assert len(SKELETON_LINE.findall(dump_log)) >= 2  # /dev and /sys/fs/cgroup still are
    criu_dir = store.materialized(snap.id).criu
    assert criu_dir is not None
    with_content = [
        d for d in tmpfs_images(criu_dir).values() if any(m[0] in ("./payload", "./d/f") for m in members(d))
    ]
    assert len(with_content) == 2 and not any(has_marker(d) for d in with_content)

    restored = await restore_snapshot(store, snap.id, env["new_id"]("r1"), manager=env["manager"])
    copy = restored.sandbox
    assert copy.pid is not None
    assert Path(f"/proc/{copy.pid}/root/dev/shm/payload").read_text() == "shm payload\n" * 200
    assert Path(f"/proc/{copy.pid}/root/tmp/d/f").read_text() == "tmp content\n"
    await copy.destroy()
    await src.destroy()


@pytest.mark.parametrize("trick", ["dotdot", "symlink-parent"])
async def test_hostile_skeleton_image_fails_the_restore_and_creates_nothing(
    env: dict[str, Any], criu_log: Callable[[str], str], trick: str
) -> None:
    store: SnapshotStore = env["store"]
    manager: SandboxManager = env["manager"]
    # a dir anyone may write in, reachable from the restored sandbox's user namespace
    outside = Path(tempfile.mkdtemp(prefix="faasd-skel-outside-", dir="/var/tmp"))
    try:
        outside.chmod(0o777)
        src = await start(env, "src")
        snap = await snapshot_sandbox(store, src)
        criu_dir = store.materialized(snap.id).criu
        assert criu_dir is not None
        dev = dev_image({p: d for p, d in tmpfs_images(criu_dir).items() if has_marker(d)})
        if trick == "dotdot":
            entries = [
                ("./", tarfile.DIRTYPE, ""),
                ("./null", tarfile.REGTYPE, ""),
                ("../escape", tarfile.REGTYPE, ""),
            ]
            reason = "bad skeleton image: bad entry name"
        else:  # a symlink entry, then an entry under it: created through the link it would land outside
            entries = [
                ("./", tarfile.DIRTYPE, ""),
                ("./fd", tarfile.SYMTYPE, str(outside)),
                ("./fd/x", tarfile.REGTYPE, ""),
                ("./fd/d/", tarfile.DIRTYPE, ""),
            ]
            reason = "can't open the directory fd"
        crafted = skeleton_gzip(gnu_tar(entries))
        assert has_marker(crafted)
        dev.unlink()  # a new file: the materialised copy may share its inode with the store's blob
        dev.write_bytes(crafted)
        new_id = env["new_id"]("x")
        with pytest.raises(RuntimeFailure) as info:
            await restore_snapshot(store, snap.id, new_id, manager=manager)
        assert list(outside.iterdir()) == []
        assert "faasd-tmpfs-skeleton-v1" in info.value.message
        restore_log = criu_log("restore.log")
        assert reason in restore_log, restore_log[-3000:]
        assert manager.get(new_id) is None
        # the source is unharmed
        assert (await src.state())["status"] == "running"
        await src.destroy()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
