"""Output of a sandbox's processes: bounded buffers for the init's stdio pipes and for ``exec``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024
"""Per stream; output beyond it is dropped (``Sandbox.output_truncated`` tells)."""

OutputCallback = Callable[[str, bytes], None]


class OutputCollector(asyncio.Protocol):
    """Drains one stdio pipe into a buffer of at most ``limit`` bytes (``truncated`` once more came)."""

    def __init__(self, name: str, limit: int, on_output: OutputCallback | None) -> None:
        self.name = name
        self.limit = limit
        self.on_output = on_output
        self.buf = bytearray()
        self.truncated = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.on_output is not None:
            try:
                self.on_output(self.name, data)
            except Exception:  # a broken callback must not stop the draining
                log.exception("on_output callback failed")
        room = self.limit - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        if len(data) > room:
            self.truncated = True

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def collector_factory(col: OutputCollector) -> Callable[[], OutputCollector]:
    return lambda: col


async def read_bounded(stream: asyncio.StreamReader | None, limit: int | None) -> tuple[bytes, bool]:
    """Read ``stream`` to EOF keeping the first ``limit`` bytes (all if None); True if some were dropped."""
    if stream is None:
        return b"", False
    buf = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = len(chunk) if limit is None else limit - len(buf)
        if room > 0:
            buf += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return bytes(buf), truncated


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking); a reader that went away is not an error."""
    view = memoryview(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        while view:
            n = os.write(fd, view)
            view = view[n:]
