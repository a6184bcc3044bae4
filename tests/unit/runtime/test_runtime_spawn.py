"""spawn.run: helper processes spawned with vfork and awaited on any event loop (asyncio, uvloop)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from faasd.runtime import spawn

pytestmark = pytest.mark.unit

Loop = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS: dict[str, Loop] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run_on(request: pytest.FixtureRequest) -> Loop:
    return LOOPS[request.param]


def test_output_exit_code_and_input(run_on: Loop) -> None:
    done = run_on(spawn.run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in"))
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"err\n")


def test_caller_fds_are_not_captured(run_on: Loop, tmp_path: Any) -> None:
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        done = run_on(spawn.run(["sh", "-c", "echo to-file"], stdout=fd))
    finally:
        os.close(fd)
    assert done.stdout == b"" and path.read_bytes() == b"to-file\n"


def test_a_signal_is_a_negative_returncode(run_on: Loop) -> None:
    assert run_on(spawn.run(["sh", "-c", "kill -TERM $$"])).returncode == -15


def test_a_timeout_kills_and_reaps(run_on: Loop) -> None:
    async def go() -> None:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await spawn.run(["sh", "-c", "echo $$; exec sleep 30"], timeout_s=0.3)
        assert time.monotonic() - t0 < 10

    run_on(go())
    assert not [pid for pid in _children() if _cmdline(pid) == "sleep 30"]  # killed and reaped: no zombie


def _children() -> list[int]:
    me = os.getpid()
    out: list[int] = []
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_missing_program_is_an_os_error(run_on: Loop) -> None:
    with pytest.raises(OSError):
        run_on(spawn.run(["/no/such/program"]))


def test_several_tasks_may_wait_for_one_process(run_on: Loop) -> None:
    async def go() -> list[int]:
        proc = spawn.start(["sh", "-c", "sleep 0.1; exit 7"])
        return list(await asyncio.gather(proc.wait(), proc.wait(), proc.wait()))

    assert run_on(go()) == [7, 7, 7]  # reaped once, every waiter gets the status
