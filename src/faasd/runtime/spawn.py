"""Helper processes (``runc``) spawned without copying the daemon.

uvloop, which uvicorn runs the daemon on when it is installed, spawns through libuv's ``fork()``: the
daemon's address space (~100 MB, several threads) is duplicated page table by page table and then shared
copy-on-write until the child execs. Traced in the daemon: 3.3 ms for the fork and ~6 ms until ``runc``'s
exec, for every ``runc create``. CPython's ``subprocess`` uses ``vfork()`` (the child borrows the parent's
memory until it execs: ~0.3 ms). :func:`run` spawns with :class:`subprocess.Popen`, drains the captured
output through the event loop and waits for the exit with a pidfd (:func:`faasd.runtime.reaper.wait_pid`),
whatever the loop. Only this process's own children are waited for, by pid: libuv's and asyncio's child
handling never see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from faasd.runtime import reaper


@dataclass(frozen=True)
class Completed:
    returncode: int
    """The exit code, or ``-signal`` (as :class:`subprocess.Popen`)."""
    stdout: bytes
    stderr: bytes


async def run(
    argv: Sequence[str],
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> Completed:
    """Run ``argv`` to its end. ``stdin``/``stdout``/``stderr``: caller-owned fds (that stream is not
    captured); otherwise stdin is ``input`` (or /dev/null) and stdout/stderr are captured. Raises
    :class:`TimeoutError` after ``timeout_s`` (the process killed and reaped first), and OSError when it
    cannot be started; a cancelled run kills and reaps the process before the cancel propagates."""
    proc = subprocess.Popen(  # vfork: see the module docstring
        list(argv),
        stdin=subprocess.PIPE if input is not None else (stdin if stdin is not None else subprocess.DEVNULL),
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    readers: list[asyncio.StreamReader | None] = []
    try:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is None:
                readers.append(None)
                continue
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)  # noqa: B023 (called at once)
            transports.append(transport)
            readers.append(reader)
        if input is not None:
            assert proc.stdin is not None
            await asyncio.to_thread(_feed, proc.stdin, input)
        async with asyncio.timeout(timeout_s):
            out, err = await asyncio.gather(*(_read_all(r) for r in readers))
            ended = await reaper.wait_pid(proc.pid)
    except BaseException:
        reaper.kill(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(reaper.wait_pid(proc.pid))
        proc.returncode = -9
        raise
    finally:
        for t in transports:
            t.close()
    proc.returncode = -ended.signal if ended.signal is not None else ended.exit_code
    return Completed(proc.returncode, out, err)


async def _read_all(reader: asyncio.StreamReader | None) -> bytes:
    return await reader.read() if reader is not None else b""


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError):
        pipe.close()
