"""Sandboxes outlive the process that created them (issue 16), at the runtime level.

A separate Python process (standing in for the daemon) creates sandboxes with adoption records and is
killed with SIGKILL; this test process then re-adopts them with a fresh ``SandboxManager`` on the same
private run_dir: running ones keep running (their counter keeps counting, exec works), a paused one is
adopted paused, one that died while no owner was running is ``exited`` with its writable layer still
readable, and one without a record is left to ``cleanup_orphans``. Every id is leak-checked at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import SandboxManager, userns
from faasd.runtime import adopt as adoption
from faasd.testing.leaks import find_leaks

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

OWNER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from faasd.config import Settings
    from faasd.runtime import SandboxManager, SandboxSpec
    from faasd.runtime.adopt import write_record

    cfg = json.loads(sys.argv[1])
    COUNT = "i=0; while true; do i=$((i+1)); echo $i > /count.tmp; mv /count.tmp /count; sleep 0.1; done"

    async def main():
        s = Settings(data_dir=Path(cfg["data"]), run_dir=Path(cfg["run"]), cache_dir=Path(cfg["cache"]),
                     auth=False, direct_pool="")
        m = SandboxManager(s)
        lowers = [Path(cfg["rootfs"])]
        for sid, kind in cfg["sandboxes"].items():
            spec = SandboxSpec(id=sid, lowers=lowers, args=["/bin/sh", "-c", COUNT],
                               annotations={"test": kind})
            sb = await m.create(spec, stdin_pipe=False)
            await sb.start()
            r = await sb.exec(["/bin/sh", "-c", "echo kept > /written"])
            assert r.exit_code == 0, r
            if kind == "paused":
                await sb.pause()
            if kind != "norecord":
                write_record(sb, "test", {"kind": kind})
        print("ready", flush=True)
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def _count(settings: Settings, sid: str) -> int:
    path = settings.sandboxes_dir / sid / "rootfs" / "count"
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _wait_count_above(settings: Settings, sid: str, value: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = _count(settings, sid)
        if n > value:
            return n
        time.sleep(0.1)
    raise AssertionError(f"the counter of {sid} stopped at {value}")


@pytest.mark.usefixtures("manager")
async def test_chaos_readopt_after_owner_kill9(settings: Settings, python_rootfs: Path) -> None:
    uid = os.urandom(4).hex()
    ids = {f"fd-ra{uid}run": "run", f"fd-ra{uid}pause": "paused", f"fd-ra{uid}die": "die",
           f"fd-ra{uid}norec": "norecord"}
    run_id, pause_id, die_id, norec_id = ids
    cfg = {"data": str(settings.data_dir), "run": str(settings.run_dir), "cache": str(settings.cache_dir),
           "rootfs": str(python_rootfs), "sandboxes": ids}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, json.dumps(cfg)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    m: SandboxManager | None = None
    try:
        assert owner.stdout is not None
        line = await asyncio.to_thread(owner.stdout.readline)
        assert line.strip() == b"ready", owner.stderr.read() if owner.stderr else line
        before = _wait_count_above(settings, run_id, 0)
        ranges = {sid: userns.allocated(sid) for sid in ids}
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        # the owner is gone: the sandboxes are not
        after = _wait_count_above(settings, run_id, before)
        paused_at = _count(settings, pause_id)
        # one sandbox dies while nobody owns it
        die_pid = int((settings.sandboxes_dir / die_id / "init.pid").read_text())
        os.kill(die_pid, signal.SIGKILL)

        m = SandboxManager(settings)
        records = adoption.find_records(m, "test")
        assert set(records) == {run_id, pause_id, die_id}
        run = await adoption.adopt(m, records[run_id])
        paused = await adoption.adopt(m, records[pause_id])
        died = None
        for _ in range(100):  # the kill is asynchronous
            died = await adoption.adopt(m, records[die_id])
            assert died is not None
            if died.state == "exited":
                break
            await adoption.release(died.sandbox)
            await asyncio.sleep(0.05)
        assert run is not None and run.state == "running"
        assert paused is not None and paused.state == "paused"
        assert died is not None and died.state == "exited"

        # the live one: same process, same range (not allocated twice), exec works, counter goes on
        sb = run.sandbox
        assert sb.status == "running" and sb.userns == ranges[run_id] == userns.allocated(run_id)
        res = await sb.exec(["/bin/sh", "-c", "cat /written /count"])
        assert res.exit_code == 0, res
        lines = res.stdout.decode().split()
        assert lines[0] == "kept" and int(lines[1]) >= after
        _wait_count_above(settings, run_id, int(lines[1]))
        assert sb.netns is not None and sb.netns.exists()

        # the paused one is still frozen; it resumes and counts again
        assert paused.sandbox.status == "paused" and _count(settings, pause_id) == paused_at
        await paused.sandbox.resume()
        _wait_count_above(settings, pause_id, paused_at)

        # the dead one: exited, writable layer still there to be kept
        assert died.sandbox.status == "stopped"
        assert died.sandbox.rootfs is not None and died.sandbox.rootfs.upper is not None
        assert (died.sandbox.rootfs.upper / "written").read_text() == "kept\n"

        # adopting twice is refused; the sandbox without a record is an orphan
        with pytest.raises(Exception, match="already owned"):
            await adoption.adopt(m, records[run_id])
        cleaned = await m.cleanup_orphans()
        assert cleaned == [norec_id]

        # destroy ends an adopted sandbox like any other (its exit is seen through the pidfd)
        await sb.destroy()
        await paused.sandbox.destroy()
        await died.sandbox.destroy()
        assert sb.exit_status is not None
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        await SandboxManager(settings).cleanup_orphans()
        from faasd.runtime import reaper

        reaper.reap_orphans()
    assert not find_leaks(settings, list(ids)), find_leaks(settings, list(ids))
