"""faasd's CRIU patches 0005 and 0006 (scripts/criu-patches/): the restored pages are populated with
``madvise(MADV_POPULATE_WRITE)`` before CRIU reads them in, and the copy's memory is the source's (a program
checking a checksum of its ~8 MB of state after the restore); CRIU polls the v1 freezer from 1 ms on instead
of every 100 ms, and a dump's tasks are resumed as before; CRIU calls faasd back at post-dump itself
(0007: no action script, no shell started at each action while the tasks stand still). The binary is
built without GnuTLS and nftables (set-up's ``NO_GNUTLS=1 LIB_NFTABLES=``): faasd uses neither, and
loading them cost each CRIU run a few ms."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed"),
]

POPULATE_LINE = re.compile(r"faasd-populate-v1: (\d+) ranges populated, (\d+) not")
FREEZE_LINE = re.compile(r"faasd-freeze-poll-v1: frozen after (\d+) ms of polls")

# ~8 MB of state made once; each line re-checks its checksum (a page restored wrong changes it)
PROG = r"""
import hashlib, time
state = [hashlib.sha256(str(i).encode()).hexdigest() * 2 for i in range(60000)]
digest = hashlib.sha256("".join(state).encode()).hexdigest()
n = 0
while True:
    n += 1
    ok = hashlib.sha256("".join(state).encode()).hexdigest() == digest
    print(n, "ok" if ok else "CORRUPT", flush=True)
    time.sleep(0.02)
"""


async def _lines(sb: Sandbox, count: int) -> list[str]:
    for _ in range(1500):
        lines = sb.stdout().decode().splitlines()
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError(f"{sb.id} printed {sb.stdout()[-300:]!r}, stderr {sb.stderr()[-500:]!r}")


async def test_restored_pages_are_populated_and_equal_the_sources_and_the_freezer_is_polled_early(
    settings: Settings,
    unique_id: str,
    python_rootfs: Path,
    no_leaks: list[str],
    criu_log: Callable[[str], str],
) -> None:
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)
    src_id, copy_id = f"fd-{unique_id}-src", f"fd-{unique_id}-cp"
    no_leaks += [src_id, copy_id]
    spec = SandboxSpec(
        id=src_id,
        lowers=[python_rootfs],
        args=["python3", "-c", PROG],
        limits=Limits(memory_mb=256, disk_mb=64, timeout_s=None),
    )
    try:
        src = await manager.create(spec, stdin_pipe=False)
        await src.start()
        await _lines(src, 2)
        snap = await snapshot_sandbox(store, src)
        dump_log = criu_log("dump.log")
        polls = FREEZE_LINE.findall(dump_log)
        assert polls, "criu lacks scripts/criu-patches/0006-freeze-poll.patch (setup-system.sh)"
        assert "faasd-post-dump-fifo-v2: answered 0" in dump_log, "criu lacks 0007-post-dump-fifo.patch"
        assert "criu-post-dump.sh" not in dump_log  # no action script ran
        before = len(src.stdout().decode().splitlines())
        await _lines(src, before + 2)  # the source was resumed after the dump
        copy = (await restore_snapshot(store, snap.id, copy_id, manager=manager)).sandbox
        lines = await _lines(copy, 3)
        assert all(line.endswith(" ok") for line in lines), lines
        counts = [(int(a), int(b)) for a, b in POPULATE_LINE.findall(criu_log("restore.log"))]
        assert counts, "criu lacks scripts/criu-patches/0005-populate-before-preadv.patch (setup-system.sh)"
        assert sum(a for a, _ in counts) > 0 and all(b == 0 for _, b in counts), counts
    finally:
        for sb in list(manager._sandboxes.values()):
            await sb.destroy()


def test_criu_loads_neither_gnutls_nor_nftables(settings: Settings) -> None:
    binary = shutil.which(settings.criu_binary) or settings.criu_binary
    libs = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    assert "libprotobuf-c" in libs, libs  # ldd did list the binary's libraries
    loaded = [line.split()[0] for line in libs.splitlines() if re.search(r"libgnutls|libnftables", line)]
    assert not loaded, f"{binary} loads {loaded}: rebuild it with scripts/setup-system.sh"
