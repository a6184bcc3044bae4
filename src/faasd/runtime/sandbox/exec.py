"""``runc exec`` of another process in a running sandbox: bounded output, timeout and pids-limit watch,
OOM report, and killing the exec's whole process group when it has to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as _signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from faasd.runtime import cgroups, reaper
from faasd.runtime.models import ExecResult
from faasd.runtime.runc import OciRuntime
from faasd.runtime.sandbox.limits import pids_limit_hit
from faasd.runtime.sandbox.output import read_bounded
from faasd.runtime.sandbox.registry import live_pids


async def run_exec(
    runtime: OciRuntime,
    sandbox_id: str,
    bundle: Path,
    args: Sequence[str],
    *,
    stdin: bytes = b"",
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: str | None = None,
    output_limit: int | None = None,
    watch_pids: bool = False,
) -> ExecResult:
    """Run another process in the running sandbox ``sandbox_id`` (same namespaces, limits, seccomp, user)
    with ``runc exec``: what :meth:`Sandbox.exec <faasd.runtime.sandbox.Sandbox.exec>` does.

    ``output_limit``: keep at most that many bytes per stream (the rest is read and dropped;
    ``stdout_truncated``/``stderr_truncated`` tell). ``watch_pids``: if a fork fails on the pids limit
    while the process runs, its process group is killed at once (``pids_exhausted``). ``oom_killed``
    tells whether the OOM killer struck in the sandbox while it ran.
    """
    pid_file = bundle / f"exec-{time.monotonic_ns()}.pid"
    argv = [
        *runtime.global_args(),
        *runtime.exec_args(sandbox_id, args, env=env, cwd=cwd, user=user, pid_file=pid_file),
    ]
    oom = cgroups.OomCounter(sandbox_id)
    pids = cgroups.PidsCounter(sandbox_id)
    oom_before, pids_before = oom.read(), pids.read()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def feed() -> None:
        assert proc.stdin is not None
        # A process that exits at once closes its stdin pipe before we write: asyncio reports that as
        # BrokenPipe/ConnectionReset, uvloop as a RuntimeError on the closed transport. Either way the
        # process did not want its input, which is not an error of the exec.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            if stdin and not proc.stdin.is_closing():
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            proc.stdin.close()

    async def io() -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
        out, err, _ = await asyncio.gather(
            read_bounded(proc.stdout, output_limit), read_bounded(proc.stderr, output_limit), feed()
        )
        await proc.wait()
        return out, err

    comm = asyncio.ensure_future(io())
    watcher = asyncio.ensure_future(pids_limit_hit(pids, pids_before)) if watch_pids else None
    timed_out = exhausted = False
    seen_ms: float | None = None
    try:
        done, _ = await asyncio.wait(
            {comm} if watcher is None else {comm, watcher}, timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if comm not in done:
            if watcher is not None and watcher in done:
                exhausted = True
                seen_ms = round((watcher.result() - started) * 1000, 3)
            else:
                timed_out = True
            # Kill the exec'd process *group* in the container (runc makes the process a session
            # leader, so its background children share its pgid and would otherwise keep running and
            # hold the stdio pipes open), then let `runc exec` reap it and exit by itself: killing runc
            # first would hand an unreaped child to us (subreaper), and a zombie of the container's pid
            # namespace keeps its init from ever exiting on destroy.
            await kill_exec_group(pid_file, proc, group=runtime.name == "runc")
            try:
                await asyncio.wait_for(asyncio.shield(comm), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await comm
                await asyncio.sleep(0.05)
                reaper.reap_orphans(live_pids())
        (out, out_cut), (err, err_cut) = comm.result()
    finally:
        if watcher is not None:
            watcher.cancel()
        if not comm.done():
            comm.cancel()
        pids.close()
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    oom_killed = oom.read() > oom_before
    oom.close()
    if watch_pids and not exhausted and pids.read() > pids_before:
        exhausted = True  # it hit the limit and ended before the next poll
    rc = proc.returncode if proc.returncode is not None else -1
    return ExecResult(
        137 if timed_out or seen_ms is not None else rc, out, err, timed_out, oom_killed=oom_killed,
        pids_exhausted=exhausted, stdout_truncated=out_cut, stderr_truncated=err_cut,
        pids_detected_ms=seen_ms,
    )

async def kill_exec_group(pid_file: Path, proc: asyncio.subprocess.Process, group: bool) -> None:
    """SIGKILL the process (``group``: its process group) that ``runc exec --pid-file`` started."""
    exec_pid: int | None = None
    for _ in range(100):  # runc writes the pid file right after starting the process
        with contextlib.suppress(OSError, ValueError):
            exec_pid = int(pid_file.read_text().strip())
        if exec_pid is not None or proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    if exec_pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # runc setsid()s the process: its group is the whole tree it started
        if group and os.getpgid(exec_pid) == exec_pid:
            os.killpg(exec_pid, _signal.SIGKILL)
    reaper.kill(exec_pid)
