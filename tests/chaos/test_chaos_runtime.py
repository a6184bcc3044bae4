"""Failure injection against the real runtime: kill -9 of sandbox processes, of runc and of the daemon,
state removed behind the manager's back, a full run_dir. Each must end in a clear result or error and
leave nothing behind (checked for the ids the test created only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chaos_helpers import Ids, alive, reap, write_init_killing_runc, write_runc_wrapper

from faasd.config import Settings
from faasd.errors import FaasdError, RuntimeFailure
from faasd.rootfs import mounts
from faasd.runtime import SandboxManager
from faasd.runtime import network as net
from faasd.testing.leaks import runc_ids, sandbox_leaks

pytestmark = [pytest.mark.chaos]

HANG_GUARD_S = 60  # a hang fails the test instead of blocking the suite; not a timing assertion


async def wait_for_output(sb, text: bytes) -> None:  # type: ignore[no-untyped-def]
    for _ in range(600):
        if text in sb.stdout():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"sandbox never printed {text!r}: {sb.stdout()!r} {sb.stderr()!r}")


# ----------------------------------------------------------------------------- sandbox processes
async def test_kill9_of_init_mid_run_gives_clear_result(manager: SandboxManager, ids: Ids) -> None:
    spec = ids.spec("python3", "-c", "import time; print('up', flush=True); time.sleep(600)")
    run = asyncio.ensure_future(manager.run(spec, timeout_s=300))
    sb = None
    for _ in range(500):
        sb = manager.get(spec.id)
        if sb is not None and b"up" in sb.stdout():
            break
        await asyncio.sleep(0.02)
    assert sb is not None and sb.pid is not None
    os.kill(sb.pid, signal.SIGKILL)
    res = await asyncio.wait_for(run, HANG_GUARD_S)
    assert res.exit_code == 137 and res.signal == signal.SIGKILL
    assert not res.timed_out and not res.oom_killed
    assert res.stdout == b"up\n"


async def test_kill9_of_every_process_in_cgroup(manager: SandboxManager, ids: Ids) -> None:
    code = (
        "import os, time\n"
        "for _ in range(5):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600); os._exit(0)\n"
        "print('up', flush=True); time.sleep(600)\n"
    )
    sb = await manager.create(ids.spec("python3", "-c", code))
    try:
        await sb.start()
        await wait_for_output(sb, b"up")
        from faasd.runtime import cgroups

        pids = cgroups.procs(sb.id)
        assert len(pids) >= 6
        for pid in sorted(pids, reverse=True):  # children first; killing init takes the rest with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        status = await asyncio.wait_for(sb.wait(300), HANG_GUARD_S)
        assert status.exit_code == 137 and not status.timed_out
    finally:
        await sb.destroy()
    assert not any(alive(p) for p in pids)


async def test_kill9_of_runc_exec_returns_and_destroy_cleans(manager: SandboxManager, ids: Ids) -> None:
    sb = await manager.create(ids.spec("sleep", "600"))
    try:
        await sb.start()
        exec_task = asyncio.ensure_future(sb.exec(["sh", "-c", "echo started; sleep 600"], timeout=300))
        runc_exec = None
        for _ in range(500):
            for pid in _children_of(os.getpid()):
                cmd = _cmdline(pid)
                if "exec" in cmd and sb.id in cmd:
                    runc_exec = pid
            if runc_exec:
                break
            await asyncio.sleep(0.02)
        assert runc_exec is not None, "runc exec process not found"
        await asyncio.sleep(0.3)
        os.kill(runc_exec, signal.SIGKILL)
        res = await asyncio.wait_for(exec_task, HANG_GUARD_S)
        assert res.exit_code != 0  # reported as failed, not hung
        assert sb.status == "running"  # the sandbox itself is unaffected
    finally:
        await asyncio.wait_for(sb.destroy(), HANG_GUARD_S)


# ----------------------------------------------------------------------------- runc killed / state removed
async def test_runc_killed_after_create_is_a_clear_error_and_nothing_left(
    settings: Settings, tmp_path: Path, ids: Ids
) -> None:
    wrapper = write_runc_wrapper(tmp_path / "runc-chaos", kill_self_after="create")
    m = SandboxManager(settings.model_copy(update={"runc_binary": str(wrapper)}))
    spec = ids.spec("sleep", "600")
    with pytest.raises(RuntimeFailure, match="create"):
        await asyncio.wait_for(m.create(spec), HANG_GUARD_S)
    assert sandbox_leaks(settings, spec.id) == []


async def test_container_killed_before_start_run_fails_clearly_and_nothing_left(
    settings: Settings, tmp_path: Path, ids: Ids
) -> None:
    # a created container is started by reading its exec FIFO (faasd.runtime.execfifo), not by `runc start`:
    # the fault here is its init dying between create and start
    wrapper = write_init_killing_runc(tmp_path / "runc-chaos")
    m = SandboxManager(settings.model_copy(update={"runc_binary": str(wrapper)}))
    spec = ids.spec("echo", "never")
    with pytest.raises(RuntimeFailure) as err:  # whichever step notices first (netns pin, start) says so
        await asyncio.wait_for(m.run(spec, timeout_s=30), HANG_GUARD_S)
    assert spec.id in str(err.value)
    assert sandbox_leaks(settings, spec.id) == []


async def test_runc_killed_during_delete_then_cleanup_orphans_removes_all(
    settings: Settings, tmp_path: Path, ids: Ids
) -> None:
    wrapper = write_runc_wrapper(tmp_path / "runc-chaos", kill_self_before="delete")
    m = SandboxManager(settings.model_copy(update={"runc_binary": str(wrapper)}))
    sb = await m.create(ids.spec("sleep", "600"))
    await sb.start()
    init_pid = sb.pid
    assert init_pid is not None
    try:
        await asyncio.wait_for(sb.destroy(), HANG_GUARD_S)
        destroyed_cleanly = True
    except RuntimeFailure as exc:
        destroyed_cleanly = False
        assert sb.id in exc.message  # names what could not be removed
    # whatever destroy managed, a fresh manager with a working runc reconciles the rest
    if not destroyed_cleanly or sandbox_leaks(settings, sb.id):
        await SandboxManager(settings).cleanup_orphans()
    reap([init_pid])
    assert sandbox_leaks(settings, sb.id) == []
    assert not alive(init_pid)


async def test_container_deleted_behind_managers_back(
    manager: SandboxManager, settings: Settings, ids: Ids
) -> None:
    sb = await manager.create(ids.spec("sleep", "600"))
    await sb.start()
    subprocess.run(["runc", "--root", str(settings.runc_root), "delete", "--force", sb.id], check=True)
    status = await asyncio.wait_for(sb.wait(300), HANG_GUARD_S)
    assert status.exit_code == 137
    await asyncio.wait_for(sb.destroy(), HANG_GUARD_S)


async def test_rootfs_unmounted_and_netns_removed_behind_managers_back(
    manager: SandboxManager, settings: Settings, ids: Ids
) -> None:
    sb = await manager.create(ids.spec("sleep", "600"))
    await sb.start()
    assert sb.rootfs is not None
    subprocess.run(["umount", "-l", str(sb.rootfs.path)], check=True)
    ns = net.NETNS_DIR / sb.id
    subprocess.run(["umount", "-l", str(ns)], check=False)
    ns.unlink(missing_ok=True)
    await asyncio.wait_for(sb.destroy(), HANG_GUARD_S)


async def test_bundle_removed_behind_managers_back(
    manager: SandboxManager, settings: Settings, ids: Ids
) -> None:
    sb = await manager.create(ids.spec("sleep", "600"))
    await sb.start()
    for m in sorted(mounts.mounts_under(sb.bundle), key=lambda p: len(str(p)), reverse=True):
        subprocess.run(["umount", "-l", str(m)], check=False)
    subprocess.run(["rm", "-rf", str(sb.bundle)], check=True)
    init_pid = sb.pid
    assert init_pid is not None and alive(init_pid)
    assert not sb.bundle.exists() and mounts.mounts_under(sb.bundle) == []
    # destroy copes with a bundle that is gone (its files, pid file and mounts): no error (not caught
    # here: a RuntimeFailure fails the test), init killed, the sandbox forgotten, and no container,
    # cgroup, netns, loop device or user namespace range left (checked here, and again by `ids`)
    await asyncio.wait_for(sb.destroy(), HANG_GUARD_S)
    assert not alive(init_pid)
    assert sb.status == "destroyed" and manager.get(sb.id) is None
    assert sandbox_leaks(settings, sb.id) == []


# ----------------------------------------------------------------------------- daemon crash
CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from faasd.config import Settings
    from faasd.runtime import SandboxManager, SandboxSpec

    async def main() -> None:
        data, run, rootfs, running_id, created_id = sys.argv[1:6]
        s = Settings(data_dir=Path(data), run_dir=Path(run), auth=False)
        m = SandboxManager(s)
        a = await m.create(SandboxSpec(id=running_id, lowers=[Path(rootfs)], args=["sleep", "600"]))
        await a.start()
        b = await m.create(SandboxSpec(id=created_id, lowers=[Path(rootfs)], args=["sleep", "600"]))
        print(a.pid, b.pid, flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_cleanup_orphans_after_daemon_kill9(
    manager: SandboxManager, settings: Settings, python_rootfs: Path, ids: Ids
) -> None:
    running_id, created_id = ids.new(), ids.new()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHER,
            str(settings.data_dir),
            str(settings.run_dir),
            str(python_rootfs),
            running_id,
            created_id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), HANG_GUARD_S)  # type: ignore[union-attr]
        assert line, proc.stderr.read().decode()  # type: ignore[union-attr]
        pids = [int(x) for x in line.split()]
        assert {running_id, created_id} <= runc_ids(settings.runc_root)
    finally:
        proc.kill()  # the "daemon" dies with SIGKILL: no cleanup code runs
        proc.wait()
    assert all(sandbox_leaks(settings, sid) for sid in (running_id, created_id))  # really left behind
    fresh = SandboxManager(settings)
    listed = {i.id: i for i in await fresh.list()}
    assert not listed[running_id].owned and not listed[created_id].owned
    cleaned = await asyncio.wait_for(fresh.cleanup_orphans(), HANG_GUARD_S)
    assert {running_id, created_id} <= set(cleaned)
    reap(pids)
    assert not any(alive(p) for p in pids)
    assert await asyncio.wait_for(fresh.cleanup_orphans(), HANG_GUARD_S) == []  # idempotent


async def test_cleanup_orphans_leaves_live_sandboxes_alone(
    manager: SandboxManager, settings: Settings, ids: Ids
) -> None:
    sb = await manager.create(ids.spec("sleep", "600"))
    try:
        await sb.start()
        cleaned = await SandboxManager(settings).cleanup_orphans()
        assert sb.id not in cleaned
        assert sb.id in runc_ids(settings.runc_root)
        assert (await sb.state())["status"] == "running"
    finally:
        await sb.destroy()


# ----------------------------------------------------------------------------- disk full
@pytest.fixture
def full_run_dir(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A run_dir on a 2 MiB tmpfs that is then filled up."""
    run = tmp_path / "full-run"
    run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(run)], check=True)
    try:
        yield run
    finally:
        subprocess.run(["umount", "-l", str(run)], check=False)


def _fill(run_dir: Path, room_kb: int) -> None:
    """Fill the fs of ``run_dir`` completely, then free ``room_kb`` KiB."""
    filler = run_dir / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    assert os.statvfs(run_dir).f_bavail == 0
    if room_kb:
        os.truncate(filler, max(0, filler.stat().st_size - room_kb * 1024))


async def _create_on_full_fs(settings: Settings, run_dir: Path, ids: Ids, room_kb: int) -> str | None:
    """Run a sandbox with run_dir nearly full; returns the error message (None if it ran). Asserts that
    nothing of the sandbox is left either way."""
    s = settings.model_copy(update={"run_dir": run_dir})
    for d in ("sandboxes", "runc"):
        (run_dir / d).mkdir(exist_ok=True)
    (run_dir / "filler").unlink(missing_ok=True)
    _fill(run_dir, room_kb)
    spec = ids.spec("echo", "hello")
    message = None
    try:
        res = await asyncio.wait_for(SandboxManager(s).run(spec, timeout_s=30), HANG_GUARD_S)
    except FaasdError as exc:
        message = exc.message
    else:
        assert res.exit_code == 0 and res.stdout == b"hello\n"  # enough room after all: it really ran
    assert sandbox_leaks(s, spec.id) == [], (room_kb, message)
    assert sorted(p.name for p in run_dir.iterdir()) == ["filler", "runc", "sandboxes"]
    assert list((run_dir / "sandboxes").iterdir()) == [] and list((run_dir / "runc").iterdir()) == []
    return message


ROOMS_KB = list(range(0, 68, 4))


async def test_disk_full_run_dir_during_create_leaves_nothing(
    settings: Settings, full_run_dir: Path, ids: Ids
) -> None:
    outcomes = {}
    for room in ROOMS_KB:
        outcomes[room] = await _create_on_full_fs(settings, full_run_dir, ids, room)
    assert any(m is not None for m in outcomes.values()), "the fs was never full enough to fail"
    assert any(m is None for m in outcomes.values()), "never enough room to run: test setup is wrong"


async def test_disk_full_run_dir_error_names_the_cause(
    settings: Settings, full_run_dir: Path, ids: Ids
) -> None:
    unclear = {}
    for room in ROOMS_KB:
        message = await _create_on_full_fs(settings, full_run_dir, ids, room)
        if message is not None and not any(w in message.lower() for w in ("space", "enospc", "full")):
            unclear[room] = message
    assert not unclear, unclear


# ----------------------------------------------------------------------------- helpers
def _children_of(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
