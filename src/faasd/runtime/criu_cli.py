"""What faasd's direct CRIU dumps and restores (:mod:`faasd.runtime.criu_dump`,
:mod:`faasd.runtime.criu_restore`) share: the host check, CRIU's options flags, running one ``criu``
process, and runc's ``descriptors.json``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from faasd.errors import RuntimeFailure
from faasd.runtime import cgroups

DESCRIPTORS_JSON = "descriptors.json"
"""runc's list of the dumped init's fds 0-2 (``pipe:[ino]``, ``/dev/null``, ...), in the CRIU image dir."""

_FLAGS = (
    ("--tcp-established", "tcp_established"), ("--ext-unix-sk", "ext_unix_sk"),
    ("--file-locks", "file_locks"), ("--shell-job", "shell_job"),
)


def eligible_host() -> bool:
    """Whether this host's cgroups are v1 or hybrid (faasd writes v1 cgroup files for a direct restore, and
    runc hands CRIU other options on v2-only hosts) and faasd runs as root."""
    return not cgroups.is_v2_only() and os.geteuid() == 0


def option_flags(criu_opts: Mapping[str, bool]) -> list[str]:
    """CRIU's flags for ``criu_opts`` (keys ``tcp_established``, ``ext_unix_sk``, ``file_locks``,
    ``shell_job``)."""
    return [flag for flag, key in _FLAGS if criu_opts.get(key, False)]


async def run(
    argv: Sequence[str],
    *,
    what: str,
    timeout_s: float,
    details: Mapping[str, Any] | None = None,
    **spawn: Any,
) -> None:
    """Run ``argv`` (a ``criu`` command) to its end; :class:`RuntimeFailure` (with ``details``) naming
    ``what`` when it fails or outlives ``timeout_s`` (then it is killed). ``spawn``: stdio, cwd and env."""
    proc = await asyncio.create_subprocess_exec(*argv, **spawn)
    try:
        rc = await asyncio.wait_for(proc.wait(), timeout_s)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise RuntimeFailure(f"{what} did not finish within {timeout_s:g} s", **(details or {})) from None
        raise
    if rc != 0:
        raise RuntimeFailure(f"{what} exited with status {rc}", **(details or {}))
