"""Which limit a sandbox hit: the error naming it, and the watch on the pids counter (fork bombs)."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from faasd.errors import ResourceLimitError, pids_exhausted
from faasd.runtime.models import ExitStatus, Limits, RunResult


class PidsReader(Protocol):
    """How many forks failed on the sandbox's pids limit so far (``cgroups.PidsCounter``)."""

    def read(self) -> int: ...


def raise_for_limits(status: ExitStatus | RunResult, limits: Limits) -> None:
    """Raise :class:`ResourceLimitError` naming the limit the sandbox hit (pids, memory or wall-clock)."""
    if status.pids_exhausted:
        raise pids_exhausted(limits.pids, "the sandbox")
    if status.oom_killed:
        mem = f"{limits.memory_mb} MiB" if limits.memory_mb is not None else "the host's memory"
        raise ResourceLimitError(
            f"memory limit of {mem} exceeded: the process was killed by the OOM killer; "
            "raise the memory limit or reduce the function's memory use",
            limit="memory",
            memory_mb=limits.memory_mb,
        )
    if status.timed_out:
        t = f"{limits.timeout_s:g} s" if limits.timeout_s is not None else "the deadline"
        raise ResourceLimitError(
            f"wall-clock timeout of {t} exceeded: the process was killed; "
            "raise the timeout or make it faster",
            limit="timeout",
            timeout_s=limits.timeout_s,
        )


PIDS_POLL_S = 0.02
"""How often the pids counter (``pids.events``, one ``pread`` of ~2 us) is read while a request is watched:
a fork bomb is seen at most this long after the limit is hit, then killed."""


async def pids_limit_hit(counter: PidsReader, baseline: int, interval: float = PIDS_POLL_S) -> float:
    """Return once the sandbox's pids counter rises above ``baseline`` (a fork failed on the pids limit):
    the ``time.monotonic()`` when that was seen. Never returns while the limit is not hit."""
    while True:
        await asyncio.sleep(interval)
        if counter.read() > baseline:
            return time.monotonic()
