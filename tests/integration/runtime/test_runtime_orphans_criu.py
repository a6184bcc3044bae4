"""cleanup_orphans removes the CRIU work dirs a crashed checkpoint/restore left behind (unmounting what
is still mounted in them) and keeps those a live operation holds.

The "crash" is real: a separate process creates a work dir the way a restore does (locked), mounts a
tmpfs in it (as CRIU's cgroup yard would be) and is then SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.rootfs import mounts
from faasd.runtime import SandboxManager, SandboxSpec
from faasd.runtime.checkpoint import checkpoint
from faasd.runtime.criu_work import DUMP_WORK_PREFIX, make_work_dir, work_dir_locked

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]

HOLDER = r"""
import subprocess, sys, time
from pathlib import Path
from faasd.runtime.criu_work import make_work_dir
work = Path(sys.argv[1])
fd = make_work_dir(work)
yard = work / ".criu.cgyard.test"
yard.mkdir()
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "yard", str(yard)], check=True)
(yard / "x").write_text("x")
(work / "restore.log").write_text("half a restore\n")
print("ready", flush=True)
sys.stdin.read()
"""


def _tmpfs(path: Path) -> None:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fdtest", str(path)], check=True)
    (path / "f").write_text("data")


def _work_dirs(manager: SandboxManager, bundle: Path) -> list[Path]:
    restores = manager.settings.run_dir / "criu-work"
    found = list(restores.iterdir()) if restores.is_dir() else []
    return found + list(bundle.glob(f"{DUMP_WORK_PREFIX}*"))


def _force_clean(path: Path) -> None:
    mounts.unmount_all_under(path)
    shutil.rmtree(path, ignore_errors=True)


async def test_cleanup_orphans_removes_crashed_restore_work_dir_and_keeps_live_one(
    manager: SandboxManager, settings: Settings, sid: str
) -> None:
    work = settings.run_dir / "criu-work" / f"{sid}-1"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        # the operation is alive (it holds the lock): nothing of it is touched
        await manager.cleanup_orphans()
        assert work_dir_locked(work)
        assert (work / "restore.log").exists() and mounts.mounts_under(work) != []
        assert (work / ".criu.cgyard.test" / "x").read_text() == "x"

        # the daemon "crashes" mid-restore: its lock goes with it, the mount stays
        holder.kill()
        holder.wait(10)
        assert not work_dir_locked(work) and mounts.mounts_under(work) != []
        cleaned = await manager.cleanup_orphans()
        assert cleaned == []  # no sandbox was involved
        assert mounts.mounts_under(work) == []
        assert not work.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        _force_clean(work)


async def test_cleanup_orphans_keeps_work_dir_locked_in_this_process(
    manager: SandboxManager, settings: Settings, sid: str
) -> None:
    # a live restore of this very process (same lock protocol, same process: flock is per open file)
    live = settings.run_dir / "criu-work" / f"{sid}-2"
    stale = settings.run_dir / "criu-work" / f"{sid}-3"
    fd = make_work_dir(live)
    try:
        _tmpfs(live / "yard")
        stale.mkdir(parents=True)  # an old-style or crashed one: no lock
        _tmpfs(stale / "yard")
        # crashed between creating and locking (old) / an operation creating one right now (new)
        old_new = live.parent / f".new-{sid}-4"
        young_new = live.parent / f".new-{sid}-5"
        old_new.mkdir()
        young_new.mkdir()
        os.utime(old_new, (time.time() - 3600, time.time() - 3600))
        removed = await manager.cleanup_criu_work_dirs()
        assert removed == [old_new, stale]
        assert not stale.exists() and mounts.mounts_under(stale) == []
        assert not old_new.exists() and young_new.is_dir()
        young_new.rmdir()
        assert (live / "yard" / "f").read_text() == "data" and work_dir_locked(live)
    finally:
        os.close(fd)
        _force_clean(live)
        _force_clean(stale)
    # once released, it is stale too
    assert not live.exists()


async def test_stale_dump_work_dir_in_a_live_sandbox_is_removed_sandbox_unharmed(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    sb = await manager.create(make_spec("sleep", "1000"), stdin_pipe=False)
    dump = sb.bundle / f"{DUMP_WORK_PREFIX}999999-1"
    try:
        await sb.start()
        _tmpfs(dump / ".criu.cgyard.dump")
        cleaned = await manager.cleanup_orphans()
        assert sb.id not in cleaned
        assert not dump.exists() and mounts.mounts_under(dump) == []
        assert (await sb.runtime.state(sb.id))["status"] == "running"
        res = await sb.exec(["sh", "-c", "echo alive"], timeout=30)
        assert res.stdout == b"alive\n"
    finally:
        _force_clean(dump)
        await sb.destroy()
    no_leaks()


@pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed")
async def test_cleanup_during_real_checkpoint_and_restore_removes_nothing_live(
    manager: SandboxManager, make_spec: Spec, sid: str, tmp_path: Path,
    leaks_of: Callable[[str], list[str]],
) -> None:
    """cleanup_criu_work_dirs racing a real CRIU dump and restore never takes their work dirs."""
    from faasd.runtime.restore import SnapshotDirs, restore

    sb = await manager.create(make_spec("sleep", "1000"), stdin_pipe=False)
    new_id = sid + "-r"
    removed_during: list[Path] = []
    restored = None
    try:
        await sb.start()

        seen_live: set[str] = set()  # work dirs that existed (locked) while cleanup ran

        async def race(task: asyncio.Task[object]) -> None:
            while not task.done():
                before = {p.name for p in _work_dirs(manager, sb.bundle)}
                removed_during.extend(await manager.cleanup_criu_work_dirs())
                seen_live.update(before)
                await asyncio.sleep(0)

        dump = asyncio.create_task(checkpoint(sb, tmp_path / "cp"))
        await race(dump)  # type: ignore[arg-type]
        cp = await dump
        snap = SnapshotDirs(
            criu=cp.criu, config_json=cp.bundle / "config.json", lowers=[*sb.spec.lowers, cp.upper]
        )
        rest = asyncio.create_task(restore(manager, snap, new_id, notify_agent=False))
        await race(rest)  # type: ignore[arg-type]
        restored = await rest
        assert removed_during == []
        print(f"work dirs seen live while cleanup ran: {sorted(seen_live)}")
        assert (await restored.sandbox.runtime.state(new_id))["status"] == "running"
        assert not any(p.name.startswith(new_id) for p in (manager.settings.run_dir / "criu-work").iterdir())
    finally:
        if restored is not None:
            await restored.sandbox.destroy()
        await sb.destroy()
    assert leaks_of(sid) == [] and leaks_of(new_id) == []


def test_remove_work_dir_takes_a_dir_of_files_at_once_and_unmounts_a_mounted_one(tmp_path: Path) -> None:
    from faasd.runtime.criu_work import remove_work_dir

    flat = tmp_path / "flat"
    fd = make_work_dir(flat)
    (flat / "restore.log").write_text("log\n")
    (flat / "stats-restore").write_bytes(b"\0")
    os.symlink("restore.log", flat / "link")
    remove_work_dir(flat, fd)
    assert not flat.exists()
    # a mount in it: never deleted through (its file stays), unmounted first, then removed
    mounted = tmp_path / "mounted"
    fd = make_work_dir(mounted)
    (mounted / "restore.log").write_text("log\n")
    yard = mounted / ".criu.cgyard.test"
    try:
        _tmpfs(yard)
        remove_work_dir(mounted, fd)
        assert not mounted.exists() and mounts.mounts_under(mounted) == []
    finally:
        _force_clean(mounted)
