"""A fork bomb is reported (``pids_exhausted``) as soon as the pids limit is hit, not at the time-out; an exec
reports OOM kills and cut output."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from faasd.errors import PidsExhaustedError
from faasd.runtime import Limits, Sandbox, SandboxManager, SandboxSpec, cgroups, raise_for_limits

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]
log = logging.getLogger(__name__)

BASH_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 50"
REAPING_INIT = (
    "python3", "-c",
    "import os, time\nwhile True:\n    try:\n        os.wait()\n"
    "    except ChildProcessError:\n        time.sleep(0.05)\n",
)
"""An init that reaps what is re-parented to it (as faasd-init does in instances): the killed bomb's zombies
must not keep counting against the pids limit."""
PY_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
"""Every process keeps forking and swallows EAGAIN: without detection this runs until the time-out."""


@pytest.mark.parametrize(
    "args", [["bash", "-c", BASH_BOMB], ["python3", "-c", PY_BOMB]], ids=["bash", "python"]
)
async def test_run_fork_bomb_is_pids_exhausted(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None], args: list[str]
) -> None:
    spec = make_spec(*args, limits=Limits(pids=64))
    res = await manager.run(spec, timeout_s=60)
    log.info("fork bomb %s: pids limit seen after %s ms, run took %.1f ms", args[0], res.pids_detected_ms,
             res.duration_ms)
    assert res.pids_exhausted
    assert not res.timed_out
    assert res.pids_detected_ms is not None and res.duration_ms < 60_000
    with pytest.raises(PidsExhaustedError) as info:
        res.raise_for_limits()
    assert info.value.code == "pids_exhausted" and info.value.details["pids"] == 64
    no_leaks()


async def test_run_below_the_pids_limit_is_not_exhausted(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    res = await manager.run(make_spec("bash", "-c", "for i in 1 2 3 4; do sleep 0.01 & done; wait; echo ok"),
                            timeout_s=30)
    assert res.exit_code == 0 and res.stdout == b"ok\n"
    assert not res.pids_exhausted
    no_leaks()


async def test_pids_counter_reads_the_hierarchy_holding_pids(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    sb = await manager.create(make_spec(*REAPING_INIT, limits=Limits(pids=8)))
    try:
        await sb.start()
        counter = cgroups.PidsCounter(sb.id)
        assert counter.read() == 0
        res = await sb.exec(["bash", "-c", "for i in $(seq 20); do sleep 5 & done; wait"], timeout=30,
                            watch_pids=True)
        assert res.pids_exhausted and not res.timed_out
        assert counter.read() >= 1 == min(1, cgroups.pids_events_max(sb.id))
        counter.close()
        # the sandbox survives: only the exec's process group was killed
        assert await _alive(sb)
    finally:
        await sb.destroy()
    no_leaks()


@pytest.mark.parametrize("cmd", [BASH_BOMB, "python3 -c '" + PY_BOMB.replace("'", '"') + "'"],
                         ids=["bash", "python"])
async def test_exec_fork_bomb_kills_its_group_only(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None], cmd: str
) -> None:
    sb = await manager.create(make_spec(*REAPING_INIT, limits=Limits(pids=64)))
    try:
        await sb.start()
        res = await sb.exec(["bash", "-c", cmd], timeout=60, watch_pids=True)
        log.info("exec fork bomb: pids limit seen after %s ms", res.pids_detected_ms)
        assert res.pids_exhausted and not res.timed_out
        assert res.pids_detected_ms is not None
        assert sb.status == "running"
        assert await _alive(sb)
    finally:
        await sb.destroy()
    no_leaks()


async def test_exec_reports_oom_and_truncation(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    sb = await manager.create(make_spec("sleep", "120", limits=Limits(memory_mb=64)))
    try:
        await sb.start()
        hog = "b = bytearray(400 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
        res = await sb.exec(["python3", "-c", hog], timeout=60)
        assert res.oom_killed and res.exit_code == 137 and b"survived" not in res.stdout
        big = await sb.exec(["bash", "-c", "head -c 300000 /dev/zero; head -c 10 /dev/zero >&2"], timeout=60,
                            output_limit=100_000)
        assert big.exit_code == 0 and not big.oom_killed
        assert big.stdout_truncated and len(big.stdout) == 100_000
        assert not big.stderr_truncated and len(big.stderr) == 10
    finally:
        await sb.destroy()
    no_leaks()


async def _alive(sb: Sandbox) -> bool:
    """The sandbox still runs new processes once its init has reaped the killed group (retried: the
    zombies are reaped asynchronously)."""
    for _ in range(100):
        res = await sb.exec(["echo", "alive"], timeout=30)
        if res.stdout == b"alive\n":
            return True
        await asyncio.sleep(0.1)
    return False


def test_raise_for_limits_names_pids_first() -> None:
    from faasd.runtime.models import ExitStatus

    with pytest.raises(PidsExhaustedError):
        raise_for_limits(ExitStatus(137, oom_killed=True, pids_exhausted=True), Limits(pids=32))
