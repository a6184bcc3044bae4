"""Freeze and thaw a sandbox's cgroup around a CRIU dump, without ``runc pause``/``runc resume``.

The source of a snapshot is stopped from the freeze until the thaw, and two runc processes (each
~10-40 ms on a busy host) sat inside that window. runc derives a container's ``paused`` status from its
cgroup freezer whenever it loads the container, so writing the freezer directly is what ``runc pause``
and ``runc resume`` do (cgroup v1 ``freezer.state``; v2 ``cgroup.freeze`` + ``cgroup.events``). Without
a freezer dir (another cgroup layout) the runc commands are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from faasd.errors import RuntimeFailure
from faasd.runtime import cgroups
from faasd.runtime.runc import OciRuntime

FREEZE_TIMEOUT_S = 10.0
_RETRY_AFTER_S = 0.05
"""A v1 freezer stuck in FREEZING is thawed and frozen again after this long (as runc does)."""


def _freezer(sandbox_id: str) -> tuple[Path, str] | None:
    """(file, kind) of the sandbox's freezer: ``v1`` freezer.state or ``v2`` cgroup.freeze."""
    d = cgroups.controller_dir(sandbox_id, "freezer")
    if d is None:
        return None
    if (d / "freezer.state").is_file():
        return d / "freezer.state", "v1"
    if (d / "cgroup.freeze").is_file():
        return d / "cgroup.freeze", "v2"
    return None


def _frozen(path: Path, kind: str) -> bool:
    if kind == "v1":
        return path.read_text().strip() == "FROZEN"
    return "frozen 1" in (path.parent / "cgroup.events").read_text().splitlines()


def _write(path: Path, kind: str, frozen: bool) -> None:
    path.write_text(("FROZEN" if frozen else "THAWED") if kind == "v1" else ("1" if frozen else "0"))


async def freeze(runtime: OciRuntime, sandbox_id: str) -> None:
    """Freeze every process of the sandbox (returns once the cgroup is frozen)."""
    found = _freezer(sandbox_id)
    if found is None:
        await runtime.pause(sandbox_id)
        return
    path, kind = found
    try:
        try:
            _write(path, kind, True)
            start = last = time.monotonic()
            while not _frozen(path, kind):
                now = time.monotonic()
                if now - start > FREEZE_TIMEOUT_S:
                    raise RuntimeFailure(
                        f"sandbox {sandbox_id} did not freeze within {FREEZE_TIMEOUT_S:g} s",
                        sandbox=sandbox_id,
                    )
                if kind == "v1" and now - last > _RETRY_AFTER_S:
                    _write(path, kind, False)  # unstick a FREEZING cgroup
                    _write(path, kind, True)
                    last = now
                await asyncio.sleep(0.001)
        except OSError as exc:  # the cgroup went away: the sandbox is gone
            raise RuntimeFailure(f"freezing sandbox {sandbox_id} failed: {exc}", sandbox=sandbox_id) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            _write(path, kind, False)
        raise


async def thaw(runtime: OciRuntime, sandbox_id: str) -> None:
    found = _freezer(sandbox_id)
    if found is None:
        await runtime.resume(sandbox_id)
        return
    path, kind = found
    try:
        _write(path, kind, False)
    except OSError as exc:
        raise RuntimeFailure(f"thawing sandbox {sandbox_id} failed: {exc}", sandbox=sandbox_id) from exc
