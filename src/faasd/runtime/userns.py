"""Host-wide allocation of user-namespace id ranges, one per sandbox.

Every runc sandbox with a user namespace (``Settings.userns`` / ``SandboxSpec.userns``) gets its own range
of :data:`~faasd.runtime.models.USERNS_SIZE` (65536) host uids and gids: slot ``i`` is
``FIRST_HOST_ID + i * 65536 ..``, with ``FIRST_HOST_ID = 2**30`` and :data:`SLOTS` slots, so every range
lies in ``[2**30, 2**31)``: far above the ids of host accounts and ``/etc/subuid`` ranges
(which start at 100000 and are empty on the reference host), never 0, and no two sandboxes share an id,
whatever run_dir or daemon they belong to. Per sandbox rather than per tenant: two sandboxes of the same
tenant cannot signal, ptrace or read each other's files through a shared id either.

Allocation works like the egress /30s of :mod:`faasd.runtime.network`: an ``O_EXCL`` lock file per slot in
``/run/faasd-userns/alloc`` (holding the sandbox id) plus a ``<sandbox id>.slot`` marker, so concurrent
daemons never hand out a slot twice and a crashed daemon's slots are found again by sandbox id
(``SandboxManager`` releases them on destroy and in ``cleanup_orphans``, through its teardown).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from faasd.errors import CapacityError
from faasd.runtime.models import USERNS_SIZE, UserNamespace

ALLOC_DIR = Path("/run/faasd-userns/alloc")
FIRST_HOST_ID = 1 << 30
SLOTS = ((1 << 31) - FIRST_HOST_ID) // USERNS_SIZE
"""16384 slots: at most that many sandboxes with a user namespace on one host."""


def _marker(sandbox_id: str) -> Path:
    return ALLOC_DIR / f"{sandbox_id}.slot"


def _range(slot: int) -> UserNamespace:
    return UserNamespace(FIRST_HOST_ID + slot * USERNS_SIZE, USERNS_SIZE)


def allocated(sandbox_id: str) -> UserNamespace | None:
    """The range held by ``sandbox_id``, if any."""
    try:
        slot = int(_marker(sandbox_id).read_text())
        if (ALLOC_DIR / str(slot)).read_text() != sandbox_id:
            return None
    except (OSError, ValueError):
        return None
    return _range(slot)


def allocate(sandbox_id: str) -> UserNamespace:
    """A free range for ``sandbox_id`` (the one it already holds, if any). Raises CapacityError when full."""
    held = allocated(sandbox_id)
    if held is not None:
        return held
    ALLOC_DIR.mkdir(parents=True, exist_ok=True)
    start = int(hashlib.sha256(sandbox_id.encode()).hexdigest()[:8], 16) % SLOTS
    for k in range(SLOTS):
        slot = (start + k) % SLOTS
        try:
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
            fd = os.open(str(ALLOC_DIR / str(slot)), flags, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(sandbox_id)
        _marker(sandbox_id).write_text(str(slot))
        return _range(slot)
    raise CapacityError(
        f"all {SLOTS} user-namespace id ranges are in use; destroy idle sandboxes (or run cleanup_orphans)"
    )


def release(sandbox_id: str) -> None:
    """Give the range of ``sandbox_id`` back. Idempotent."""
    marker = _marker(sandbox_id)
    with contextlib.suppress(OSError, ValueError):
        slot = ALLOC_DIR / str(int(marker.read_text()))
        if slot.read_text() == sandbox_id:
            slot.unlink()
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()


def holders() -> dict[str, UserNamespace]:
    """Every allocated range by sandbox id (diagnostics and leak checks)."""
    out: dict[str, UserNamespace] = {}
    try:
        entries = list(ALLOC_DIR.iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                out[p.read_text()] = _range(int(p.name))
    return out
