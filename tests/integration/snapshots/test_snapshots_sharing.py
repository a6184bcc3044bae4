"""Real runc + CRIU: a fresh snapshot is hot (adopted, no unpack), evicting it forces an unpack (the process
image into memory, or to disk over the budget), restored copies are opted into KSM and ksmd really merges
the pages they share (kernel counters, not timings)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec, ksm
from faasd.runtime.criu_conf import CRIU_CONFIG_ANNOTATION, CRIU_CONFIG_YARD
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import branch, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import Snapshot, SnapshotStore

Env = tuple[SandboxManager, SnapshotStore, list[str], Path]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# ~24 MB of identical-in-every-copy state, then a line every 20 ms
PROG = r"""
import time
state = [bytes([i % 251]) * 4096 for i in range(6000)]
n = 0
while True:
    n += 1
    print(n, len(state), flush=True)
    time.sleep(0.02)
"""


async def first_line(sb: Sandbox, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while b"\n" not in sb.stdout():
        assert sb.exit_status is None, sb.stderr()[-500:]
        assert time.monotonic() < deadline, f"no output from {sb.id}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def env(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str]
) -> AsyncIterator[Env]:
    manager = SandboxManager(settings)
    try:
        yield manager, SnapshotStore(settings), no_leaks, python_rootfs
    finally:
        for sb in list(manager._sandboxes.values()):
            await sb.destroy()


async def _snapshot(env: Env, sid: str) -> tuple[Sandbox, Snapshot]:
    manager, store, ids, rootfs = env
    ids.append(sid)
    src = await manager.create(
        SandboxSpec(id=sid, lowers=[rootfs], args=["python3", "-c", PROG], limits=Limits(memory_mb=256)),
        stdin_pipe=False,
    )
    await src.start()
    await first_line(src)
    assert src.config_path.exists()
    # faasd's CRIU settings, with the cgroup yard this host has
    annotations = json.loads(src.config_path.read_text())["annotations"]
    assert annotations[CRIU_CONFIG_ANNOTATION] == str(CRIU_CONFIG_YARD)
    snap = await snapshot_sandbox(store, src)
    return src, snap


async def test_fresh_snapshot_is_hot_and_evict_forces_unpack(env: Env, unique_id: str) -> None:
    manager, store, ids, _ = env
    src, snap = await _snapshot(env, f"fd-{unique_id}-src")
    # adopted: the checkpoint dir became mnt/<id> (no staging left behind)
    assert (store.mnt_dir / snap.id / ".complete").exists()
    assert (store.mnt_dir / snap.id / "criu").is_dir()
    assert list(store.tmp_dir.iterdir()) == []
    ids.append(f"fd-{unique_id}-r1")
    r1 = await restore_snapshot(store, snap.id, f"fd-{unique_id}-r1", manager=manager)
    await first_line(r1.sandbox)
    assert store.evict(snap.id) is False  # in use by r1
    await r1.sandbox.destroy()
    assert store.evict(snap.id) is True
    assert not (store.mnt_dir / snap.id).exists()
    ids.append(f"fd-{unique_id}-r2")
    r2 = await restore_snapshot(store, snap.id, f"fd-{unique_id}-r2", manager=manager)  # unpacks again
    await first_line(r2.sandbox)
    assert (store.mnt_dir / snap.id / ".complete").exists()
    # the process image was unpacked into memory (a tmpfs), the files next to the other snapshots
    cache = store.image_cache
    assert cache.enabled and cache.get(snap.id) == cache.root / snap.id / "criu"
    assert (cache.root / snap.id / "criu" / "inventory.img").is_file()
    assert not (store.mnt_dir / snap.id / "criu").exists()
    assert (store.mnt_dir / snap.id / "upper").is_dir()
    # the restore's own image dir (user namespace rewritten) was made there too, and is gone again
    assert list((cache.root / "restores").iterdir()) == []
    await r2.sandbox.destroy()
    assert store.evict(snap.id) is True and cache.get(snap.id) is None
    await src.destroy()


async def test_a_process_image_over_the_memory_budget_is_unpacked_to_disk(
    settings: Settings, env: Env, unique_id: str
) -> None:
    manager, _, ids, _ = env
    src, snap = await _snapshot(env, f"fd-{unique_id}-src")
    await src.destroy()
    small = SnapshotStore(settings.model_copy(update={"snapshot_image_cache_mb": 1}))  # image: ~30 MB
    assert small.evict(snap.id) is True
    ids.append(f"fd-{unique_id}-d")
    r = await restore_snapshot(small, snap.id, f"fd-{unique_id}-d", manager=manager)
    await first_line(r.sandbox)
    assert (small.mnt_dir / snap.id / "criu" / "inventory.img").is_file()
    assert small.image_cache.entries() == []
    await r.sandbox.destroy()


@pytest.mark.skipif(not ksm.supported(), reason="needs per-process KSM (Linux >= 6.4)")
async def test_branch_copies_are_opted_into_ksm_and_pages_merge(env: Env, unique_id: str) -> None:
    manager, store, ids, _ = env
    src, snap = await _snapshot(env, f"fd-{unique_id}-src")
    await src.destroy()
    new = [f"fd-{unique_id}-b{i}" for i in range(3)]
    ids.extend(new)
    before = ksm.host_stats()
    copies = [r.sandbox for r in await branch(store, snap.id, new, manager=manager)]
    try:
        for c in copies:
            await first_line(c)
            assert c.pid is not None
            assert ksm.process_stats(c.pid).get("ksm_merge_any") is True
        ksm.configure(run=1, pages_to_scan=2000, sleep_millisecs=20)
        merged: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            merged = [int(ksm.process_stats(c.pid or 0).get("ksm_merging_pages", 0)) for c in copies]
            if min(merged) >= 4000:  # most of each copy's ~6000 pages of state
                break
        assert min(merged) >= 4000, merged
        assert ksm.host_stats().pages_sharing > 0
    finally:
        ksm.configure(
            run=before.run, pages_to_scan=before.pages_to_scan, sleep_millisecs=before.sleep_millisecs
        )
        for c in copies:
            await c.destroy()


async def test_restore_without_sharing_is_not_opted_in(env: Env, unique_id: str) -> None:
    manager, store, ids, _ = env
    src, snap = await _snapshot(env, f"fd-{unique_id}-src")
    await src.destroy()
    ids.append(f"fd-{unique_id}-plain")
    r = await restore_snapshot(store, snap.id, f"fd-{unique_id}-plain", manager=manager, share_memory=False)
    await first_line(r.sandbox)
    assert r.sandbox.pid is not None
    assert ksm.process_stats(r.sandbox.pid).get("ksm_merge_any") is False
    await r.sandbox.destroy()
