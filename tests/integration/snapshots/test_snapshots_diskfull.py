"""Disk full while snapshotting: StorageFullError, nothing registered, the source keeps running."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import StorageFullError
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.snapshots.service import snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROG = "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.02)\n"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path, leave_bytes: int) -> None:
    """Fill ``fs`` so that only about ``leave_bytes`` stay free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with open(fs / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


def count(out: bytes) -> int:
    lines = [ln for ln in out.splitlines() if ln.strip().isdigit()]
    return int(lines[-1]) if lines else 0


async def test_disk_full_snapshot_is_rolled_back(
    settings: Settings, unique_id: str, python_rootfs: Path, small_fs: Path, no_leaks: list[str]
) -> None:
    manager = SandboxManager(settings)
    spec = SandboxSpec(
        id=f"fd-{unique_id}-df",
        lowers=[python_rootfs],
        args=["python3", "-c", PROG],
        limits=Limits(memory_mb=128, disk_mb=16, timeout_s=None),
    )
    no_leaks.append(spec.id)
    sb = await manager.create(spec, stdin_pipe=False)
    try:
        await sb.start()
        await asyncio.sleep(0.5)
        # size of a snapshot of this program, measured with a roomy store
        roomy = SnapshotStore(settings)
        ok = await snapshot_sandbox(roomy, sb)
        image_bytes = ok.sizes.logical_bytes
        small = SnapshotStore(small_fs / "snapshots")
        # (1) no room even for CRIU's dump; (2) the dump fits but the compressed blobs do not
        for leave, phase in ((256 * 1024, "checkpointing"), (image_bytes + 200 * 1024, "storing")):
            (small_fs / "filler").unlink(missing_ok=True)
            fill(small_fs, leave)
            before = count(sb.stdout())
            with pytest.raises(StorageFullError) as info:
                await snapshot_sandbox(small, sb)
            assert phase in info.value.message, info.value.message
            assert small.list() == []
            assert list(small.tmp_dir.iterdir()) == []
            assert list(small.manifests_dir.iterdir()) == []
            # the source was thawed and keeps counting
            assert (await sb.state())["status"] == "running"
            await asyncio.sleep(0.3)
            assert count(sb.stdout()) > before
        # after freeing space the same store works and gc finds nothing unreferenced to keep
        (small_fs / "filler").unlink()
        snap = await snapshot_sandbox(small, sb)
        assert [s.id for s in small.list()] == [snap.id]
        assert small.gc().removed_blobs == 0
    finally:
        await asyncio.shield(sb.destroy())
