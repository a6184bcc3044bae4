"""Restores that run CRIU without runc (``faasd.runtime.criu_restore``): same result as ``runc restore``,
the same record in runc's state dir, runc's commands work on the copy, and a failure leaves nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faasd.errors import RuntimeFailure
from faasd.runtime import Sandbox, SandboxManager, SandboxSpec, cgroups, ksm
from faasd.runtime.checkpoint import Checkpoint, checkpoint
from faasd.runtime.restore import SnapshotDirs, restore
from faasd.runtime.runc_state import RUNC_STATE_NAME
from fixtures.counter import COUNTER, count_above, read_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed"),
]

Spec = Callable[..., SandboxSpec]


async def _counting_on(sb: Sandbox, at_least: int) -> int:
    """The restored program keeps counting from its dumped memory (not from 1)."""
    first = await read_count(sb.io_dir)
    assert first >= at_least
    return await count_above(sb.io_dir, first, tries=250)


def _dirs(cp: Checkpoint, sb: Sandbox) -> SnapshotDirs:
    lowers = [*sb.spec.lowers, cp.upper]
    return SnapshotDirs(criu=cp.criu, config_json=cp.bundle / "config.json", lowers=lowers)


def _record(manager: SandboxManager, sandbox_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((manager.runtime("runc").root / sandbox_id / "state.json").read_text())
    return data


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs between any two restores (ids, pids, times, ranges, pipes)."""
    text = json.dumps(state).replace(state["id"], "ID")
    out: dict[str, Any] = json.loads(text)
    for key in ("init_process_pid", "init_process_start", "created", "namespace_paths"):
        out.pop(key)
    out.pop("external_descriptors")
    cfg = out["config"]
    cfg["labels"] = sorted(cfg["labels"])
    for m in cfg["uid_mappings"] + cfg["gid_mappings"]:
        m.pop("host_id")
    for d in cfg["devices"]:
        d.pop("uid"), d.pop("gid")
    return out


async def test_direct_restore_writes_runcs_own_record_and_runc_drives_the_copy(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]], tmp_path: Path
) -> None:
    sb = await manager.create(make_spec("python3", "-c", COUNTER), stdin_pipe=False)
    copies: dict[str, Sandbox] = {}
    ids = {"criu": sid + "-c", "runc": sid + "-r", "again": sid + "-a"}
    try:
        await sb.start()
        before = await read_count(sb.io_dir)
        cp = await checkpoint(sb, tmp_path / "cp")
        assert cp.dumped_by == "criu"  # CRIU ran without runc
        assert (cp.criu / "descriptors.json").is_file()
        assert (cp.bundle / RUNC_STATE_NAME).is_file()  # the snapshot keeps runc's record of its source
        assert (await sb.state())["status"] == "running"  # and the source keeps running
        for engine in ("criu", "runc"):
            manager.settings.criu_direct = engine == "criu"
            r = await restore(manager, _dirs(cp, sb), ids[engine], notify_agent=False)
            copies[engine] = r.sandbox
            assert r.sandbox.restored_by == engine
            await _counting_on(r.sandbox, before)
            if ksm.supported():  # CRIU opted itself into KSM (FAASD_KSM=1): the restored init inherited it
                assert ksm.process_stats(r.sandbox.pid or 0).get("ksm_merge_any") is True
        # the record faasd wrote is the one runc writes for the same snapshot
        assert _comparable(_record(manager, ids["criu"])) == _comparable(_record(manager, ids["runc"]))
        direct = copies["criu"]
        assert (await direct.state())["status"] == "running"
        cg = cgroups.controller_dir(direct.id, "memory")
        assert cg is not None and (cg / "memory.limit_in_bytes").read_text().strip() == str(
            direct.spec.limits.memory_mb * 1024 * 1024
        )
        assert direct.pid in cgroups.procs(direct.id)
        assert not (manager.runtime("runc").root / direct.id / "criu-root").exists()
        # runc's own commands on the copy: exec, and a checkpoint whose restore continues the count
        res = await direct.exec(["readlink", "/run/faasd-io/n"], timeout=30)
        assert res.exit_code == 0 and int(res.stdout) >= before
        n = await read_count(direct.io_dir)
        manager.settings.criu_direct = True
        cp2 = await checkpoint(direct, tmp_path / "cp2")
        assert cp2.dumped_by == "criu"
        r2 = await restore(manager, _dirs(cp2, direct), ids["again"], notify_agent=False)
        copies["again"] = r2.sandbox
        assert r2.sandbox.restored_by == "criu"
        await _counting_on(r2.sandbox, n)
    finally:
        for c in copies.values():
            await c.destroy()
        await sb.destroy()
    assert leaks_of(sid) == []
    for i in ids.values():
        assert leaks_of(i) == []
        assert not (manager.runtime("runc").root / i).exists()


async def test_a_failed_direct_restore_says_why_and_leaves_nothing(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]], tmp_path: Path
) -> None:
    sb = await manager.create(make_spec("python3", "-c", COUNTER), stdin_pipe=False)
    new_id = sid + "-x"
    try:
        await sb.start()
        await read_count(sb.io_dir)
        cp = await checkpoint(sb, tmp_path / "cp")
        cores = sorted(cp.criu.glob("core-*.img"))
        assert cores
        cores[0].write_bytes(b"\0" * 16)  # the init's registers and state are garbage
        with pytest.raises(RuntimeFailure) as info:
            await restore(manager, _dirs(cp, sb), new_id, notify_agent=False)
        assert "criu restore" in info.value.message and "Error" in info.value.message
        assert manager.get(new_id) is None
        assert not (manager.runtime("runc").root / new_id).exists()
        assert cgroups.dirs(new_id) == []
    finally:
        await sb.destroy()
    assert leaks_of(sid) == [] and leaks_of(new_id) == []


async def test_runc_does_both_when_told_or_without_runcs_record_of_the_source(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]], tmp_path: Path
) -> None:
    sb = await manager.create(make_spec("python3", "-c", COUNTER), stdin_pipe=False)
    ids = [sid + "-o", sid + "-e", sid + "-n"]
    copies: list[Sandbox] = []
    try:
        await sb.start()
        before = await read_count(sb.io_dir)
        manager.settings.criu_direct = False  # FAASD_CRIU_DIRECT=false: runc checkpoint, runc restore
        cp_runc = await checkpoint(sb, tmp_path / "cp-runc")
        assert cp_runc.dumped_by == "runc"
        r = await restore(manager, _dirs(cp_runc, sb), ids[2], notify_agent=False)
        copies.append(r.sandbox)
        assert r.sandbox.restored_by == "runc"
        await _counting_on(r.sandbox, before)
        manager.settings.criu_direct = True
        cp = await checkpoint(sb, tmp_path / "cp")
        record = (cp.bundle / RUNC_STATE_NAME).read_text()
        (cp.bundle / RUNC_STATE_NAME).unlink()  # a snapshot from before faasd kept runc's record
        r = await restore(manager, _dirs(cp, sb), ids[0], notify_agent=False)
        copies.append(r.sandbox)
        assert r.sandbox.restored_by == "runc"
        await _counting_on(r.sandbox, before)
        # a record of another sandbox than the one the snapshot's config.json describes
        (cp.bundle / RUNC_STATE_NAME).write_text(record.replace(sb.id, sid + "-other"))
        r = await restore(manager, _dirs(cp, sb), ids[1], notify_agent=False)
        copies.append(r.sandbox)
        assert r.sandbox.restored_by == "runc"
    finally:
        for c in copies:
            await c.destroy()
        await sb.destroy()
    assert leaks_of(sid) == [] and all(leaks_of(i) == [] for i in ids)


async def test_a_daemon_dying_mid_restore_leaves_nothing_cleanup_cannot_take(
    settings: Any, python_rootfs: Path, sid: str, manager: SandboxManager,
    leaks_of: Callable[[str], list[str]], tmp_path: Path,
) -> None:
    """The daemon dies after CRIU restored the copy but before runc's record was written (the worst moment:
    the copy runs, its cgroups exist, CRIU's root is still mounted in runc's state dir, runc knows nothing):
    the next daemon's ``cleanup_orphans`` removes every trace."""
    new_id = sid + "-c"
    script = textwrap.dedent(f"""
        import asyncio, os
        from pathlib import Path
        from faasd.config import Settings
        from faasd.runtime import SandboxManager, SandboxSpec, criu_restore
        from faasd.runtime.checkpoint import checkpoint
        from faasd.runtime.restore import SnapshotDirs, restore
        def crash(*args, **kwargs):
            print("crashing", flush=True)
            os._exit(9)
        criu_restore.write_record = crash
        async def main():
            s = Settings(data_dir=Path({str(settings.data_dir)!r}), run_dir=Path({str(settings.run_dir)!r}))
            m = SandboxManager(s)
            sb = await m.create(SandboxSpec(id={sid!r}, lowers=[Path({str(python_rootfs)!r})],
                                args=["python3", "-c", {COUNTER!r}]), stdin_pipe=False)
            await sb.start()
            await asyncio.sleep(0.5)
            cp = await checkpoint(sb, Path({str(tmp_path / "cp")!r}))
            dirs = SnapshotDirs(criu=cp.criu, config_json=cp.bundle / "config.json",
                                lowers=[*sb.spec.lowers, cp.upper])
            await restore(m, dirs, {new_id!r}, notify_agent=False)
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert b"crashing" in out and proc.returncode == 9, err.decode(errors="replace")
    state_dir = manager.runtime("runc").root / new_id
    assert (state_dir / "criu-root").is_dir() and not (state_dir / "state.json").exists()
    assert cgroups.procs(new_id)  # the restored copy runs
    cleaned = await manager.cleanup_orphans()
    assert set(cleaned) == {sid, new_id}
    assert leaks_of(sid) == [] and leaks_of(new_id) == []
    assert not state_dir.exists()
