"""Helper processes (``runc``, ``criu``) spawned without copying the daemon.

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


class Spawned:
    """A started helper process; :meth:`wait` may be awaited by several tasks (one reaping task)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pid = proc.pid
        self.stdin, self.stdout, self.stderr = proc.stdin, proc.stdout, proc.stderr
        self._proc = proc
        self._exit: asyncio.Task[int] | None = None

    async def wait(self) -> int:
        """The exit code, or ``-signal``, once the process has ended (it is reaped then)."""
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._reap())
        return await asyncio.shield(self._exit)

    async def _reap(self) -> int:
        ended = await reaper.wait_pid(self.pid)
        self._proc.returncode = -ended.signal if ended.signal is not None else ended.exit_code
        return self._proc.returncode

    def kill(self) -> None:
        if self._proc.returncode is None:
            reaper.kill(self.pid)

    async def stop(self) -> None:
        """Kill the process and reap it (what every failed or cancelled run does before it propagates)."""
        self.kill()
        with contextlib.suppress(Exception):
            await self.wait()


def start(
    argv: Sequence[str],
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Spawned:
    """Start ``argv`` (vfork); ``stdin``/``stdout``/``stderr`` as :class:`subprocess.Popen` takes them
    (fds, ``subprocess.PIPE``, ``subprocess.DEVNULL``; None: inherited). Raises OSError."""
    return Spawned(
        subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    )


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
    proc = start(
        argv,
        stdin=subprocess.PIPE if input is not None else (stdin if stdin is not None else subprocess.DEVNULL),
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        env=env,
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
            returncode = await proc.wait()
    except BaseException:
        await proc.stop()
        raise
    finally:
        for t in transports:
            t.close()
    return Completed(returncode, out, err)


async def _read_all(reader: asyncio.StreamReader | None) -> bytes:
    return await reader.read() if reader is not None else b""


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError):
        pipe.close()
