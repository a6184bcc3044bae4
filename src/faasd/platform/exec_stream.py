"""A process run in a live sandbox with its output streamed as it comes and its stdin kept open.

:meth:`Sandbox.exec` collects output until the process exits; the WebSocket container stream needs the
chunks as they are written and to forward stdin to a running process. This starts ``runc exec`` the same
way (same namespaces, limits, seccomp, user) with pipes it reads incrementally.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from faasd.errors import ConflictError
from faasd.runtime import reaper
from faasd.runtime.sandbox import Sandbox

OnChunk = Callable[[str, bytes], Awaitable[None]]
CHUNK = 64 * 1024


class StreamingExec:
    def __init__(self, sb: Sandbox, proc: asyncio.subprocess.Process, pid_file: os.PathLike[str]) -> None:
        self.sandbox = sb
        self.proc = proc
        self.pid_file = pid_file
        self._pumps: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls,
        sb: Sandbox,
        args: Sequence[str],
        on_chunk: OnChunk,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> StreamingExec:
        if sb.status != "running":
            raise ConflictError(f"sandbox {sb.id} is {sb.status}; exec needs a running sandbox")
        pid_file = sb.bundle / f"exec-{time.monotonic_ns()}.pid"
        argv = [
            *sb.runtime.global_args(),
            *sb.runtime.exec_args(sb.id, args, env=env, cwd=cwd, pid_file=pid_file),
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        ex = cls(sb, proc, pid_file)
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert stream is not None
            ex._pumps.append(asyncio.get_running_loop().create_task(ex._pump(name, stream, on_chunk)))
        return ex

    async def _pump(self, name: str, stream: asyncio.StreamReader, on_chunk: OnChunk) -> None:
        while True:
            data = await stream.read(CHUNK)
            if not data:
                return
            await on_chunk(name, data)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def write_stdin(self, data: bytes) -> None:
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            raise ConflictError("stdin of the running process is closed")
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    async def wait(self) -> int:
        """Exit code once the process exited and all of its output was delivered."""
        code = await self.proc.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        with contextlib.suppress(OSError):
            os.unlink(self.pid_file)
        return code

    async def kill(self) -> None:
        """SIGKILL the process group ``runc exec`` started in the sandbox; runc then exits by itself."""
        try:
            pid = int(open(self.pid_file).read().strip())  # noqa: SIM115 - tiny file
        except (OSError, ValueError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.sandbox.runtime.name == "runc" and os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        reaper.kill(pid)
