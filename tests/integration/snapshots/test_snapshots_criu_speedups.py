"""CRIU speed-ups: the kernel-feature cache in a tmpfs faasd mounts (criu_conf.KDAT_DIR), the direct cgroup
freeze/thaw around a dump (criu_freeze)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.rootfs import mounts
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.checkpoint import checkpoint
from faasd.runtime.criu_conf import KDAT_DIR, ensure_kdat_dir, is_tmpfs
from faasd.runtime.criu_freeze import _freezer, freeze, thaw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_ensure_kdat_dir_mounts_one_tmpfs_once() -> None:
    # on disk: pytest's tmp dir may itself be a tmpfs
    base = Path(tempfile.mkdtemp(prefix="faasd-kdat-", dir="/var/tmp"))
    target = base / "kdat"
    try:
        assert not is_tmpfs(base)
        assert ensure_kdat_dir(target) is True
        assert is_tmpfs(target) and target.stat().st_mode & 0o777 == 0o700
        assert ensure_kdat_dir(target) is True  # already a tmpfs: nothing stacked on it
        assert mounts.mounts_under(target) == [str(target)]
    finally:
        mounts.unmount_all_under(target)
        shutil.rmtree(base, ignore_errors=True)


def test_ensure_kdat_dir_reports_failure_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert ensure_kdat_dir(blocker / "kdat") is False  # parent is a file: no cache, no exception


async def test_checkpoint_leaves_criu_kdat_cache(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str], tmp_path: Path
) -> None:
    criu = shutil.which("criu")
    assert criu is not None
    assert str(KDAT_DIR / "criu.kdat").encode() in Path(criu).read_bytes(), (
        f"{criu} is not built with RUNDIR={KDAT_DIR}: run scripts/setup-system.sh (it rebuilds CRIU)"
    )
    manager = SandboxManager(settings)
    sid = f"fd-{unique_id}"
    no_leaks.append(sid)
    sb = await manager.create(
        SandboxSpec(id=sid, lowers=[python_rootfs], args=["sleep", "60"], limits=Limits(memory_mb=64)),
        stdin_pipe=False,
    )
    try:
        await sb.start()
        deadline = time.monotonic() + 30
        while (await sb.runtime.state(sb.id)).get("status") != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await checkpoint(sb, tmp_path / "ck")
        assert is_tmpfs(KDAT_DIR)
        assert (KDAT_DIR / "criu.kdat").stat().st_size > 0  # CRIU saved (or loaded) its probes there
    finally:
        await sb.destroy()


async def test_direct_freeze_is_what_runc_sees_as_paused(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str]
) -> None:
    manager = SandboxManager(settings)
    sid = f"fd-{unique_id}"
    no_leaks.append(sid)
    prog = "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)\n"
    sb = await manager.create(
        SandboxSpec(
            id=sid, lowers=[python_rootfs], args=["python3", "-c", prog], limits=Limits(memory_mb=64)
        ),
        stdin_pipe=False,
    )
    try:
        await sb.start()
        deadline = time.monotonic() + 30
        while b"\n" not in sb.stdout():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert _freezer(sid) is not None  # this host has a freezer dir: the direct path is the one tested
        await freeze(sb.runtime, sid)
        assert (await sb.runtime.state(sid))["status"] == "paused"
        frozen_at = len(sb.stdout())
        await asyncio.sleep(0.3)
        assert len(sb.stdout()) == frozen_at  # no output while frozen
        await thaw(sb.runtime, sid)
        assert (await sb.runtime.state(sid))["status"] == "running"
        deadline = time.monotonic() + 30
        while len(sb.stdout()) == frozen_at:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await sb.destroy()


def test_cgroup_yard_is_made_again_when_it_is_gone() -> None:
    from faasd.runtime import criu_conf

    base = Path(tempfile.mkdtemp(prefix="faasd-yard-", dir="/var/tmp"))
    kdat = base / "kdat"
    try:
        yard = criu_conf.cgroup_yard(kdat)
        if yard is None:
            pytest.skip("no cgroup yard on this host (a hierarchy is not mounted)")
        links = sorted(p.name for p in yard.iterdir())
        assert links and all((yard / n).is_symlink() for n in links)
        assert criu_conf.cgroup_yard(kdat) == yard  # made once: asked again, the same
        shutil.rmtree(yard)
        assert criu_conf.cgroup_yard(kdat) == yard and sorted(p.name for p in yard.iterdir()) == links
        mounts.unmount_all_under(kdat)  # its tmpfs gone too: mounted and made again
        assert criu_conf.cgroup_yard(kdat) == yard and sorted(p.name for p in yard.iterdir()) == links
        assert is_tmpfs(kdat)
    finally:
        mounts.unmount_all_under(kdat)
        shutil.rmtree(base, ignore_errors=True)
