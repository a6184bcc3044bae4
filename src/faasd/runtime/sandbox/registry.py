"""The sandboxes alive in this process, across managers: ``cleanup_orphans`` must never touch them, and
reaping orphaned zombies must leave their inits alone."""

from __future__ import annotations

import weakref
from typing import Protocol

from faasd.runtime.models import ExitStatus


class LiveSandbox(Protocol):
    """What the registry needs of a sandbox: its init's host pid and whether it has ended."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exit_status(self) -> ExitStatus | None: ...


LIVE: weakref.WeakValueDictionary[tuple[str, str], LiveSandbox] = weakref.WeakValueDictionary()
"""(run_dir, id) -> live Sandbox, across managers of this process (cleanup_orphans must not touch them)."""


def live_pids() -> set[int]:
    """Host pids of the inits of every live sandbox of this process that has not ended."""
    return {sb.pid for sb in list(LIVE.values()) if sb.pid is not None and sb.exit_status is None}
