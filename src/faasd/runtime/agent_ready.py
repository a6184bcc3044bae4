"""The ready signal of a starting agent: a FIFO in the sandbox's io dir it writes one byte to once it listens.

A starting agent is otherwise found ready by polling its socket (:meth:`AgentClient.wait_ready`), and every
pause between two polls is time a cold start may wait for nothing (~2.5 ms on average with pauses of up to
5 ms). With the signal, the pause ends as soon as the agent has written to ``<io dir>/ready``
(``/run/faasd-io/ready`` inside); the ping that follows is what says the agent is ready, so a byte written
by anybody else only ends a pause early. An agent that does not write it (the node agent, older agents,
restored sandboxes) is polled as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

READY_FIFO_NAME = "ready"


class ReadySignal:
    """The read end of ``<io dir>/ready`` (made before the sandbox starts); :meth:`close` removes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self.fired = False

    @classmethod
    def create(cls, io_dir: Path, owner: tuple[int, int] | None) -> ReadySignal:
        """Make the FIFO, writable by the sandbox's user (``owner``: uid, gid) only, and open its read end."""
        path = io_dir / READY_FIFO_NAME
        os.mkfifo(path, 0o600)
        try:
            if owner is not None:
                os.chown(path, *owner)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # opens without a writer
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return cls(path, fd)

    async def wait(self, timeout_s: float) -> bool:
        """Pause for up to ``timeout_s``; True (and :attr:`fired`) as soon as something was written. Once
        fired it is not waited on again (its writer gone, the FIFO reads as EOF for ever): a plain sleep."""
        fd = self._fd
        if fd is None or self.fired:
            await asyncio.sleep(timeout_s)
            return False
        loop = asyncio.get_running_loop()
        woke: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not woke.done():
                woke.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(woke, timeout_s)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.read(fd, 64)
        self.fired = True
        return True

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self.path.unlink()
