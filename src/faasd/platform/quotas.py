"""Namespace quotas: what each quota counts, the check, and reservations for starts in flight.

=================  ==========================================================================  ======
quota              counts (the namespace's ...)                                                 over
=================  ==========================================================================  ======
``max_sandboxes``  running sandboxes: instances that are starting/running/paused, restored      429
                   sandboxes (snapshot restore/branch), and function workers (warm-pool
                   workers and running ephemeral workers)
``max_memory_mb``  the memory limits of those sandboxes, summed                                 429
``max_snapshots``  snapshots in the snapshot store (checkpoints of ``checkpointed`` functions,  429
                   instance stop snapshots and merge results included)
``max_disk_mb``    the disk limits (``disk_gb``) of its instances that are not stopped, plus    507
                   the stored (deduplicated, compressed) bytes of its snapshots
=================  ==========================================================================  ======

A request that would go over a quota is refused before anything is created (``quota_exceeded`` 429, or
``storage_quota_exceeded`` 507 for disk), with a message naming the quota, its limit and the use. A
snapshot's stored size is known only once it is written: a snapshot that takes the namespace over its disk
quota is deleted again and the request answers 507. Starts in flight hold a *reservation* (counted as
use until the start ends), so concurrent requests cannot together overshoot a quota.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

from faasd.platform.errors import QuotaExceededError, StorageQuotaExceededError
from faasd.platform.namespaces import Quotas


@dataclass(frozen=True)
class Usage:
    """Use of (or a request for) the quota-bound resources of a namespace."""

    sandboxes: int = 0
    memory_mb: int = 0
    disk_mb: int = 0
    snapshots: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_QUOTAS: tuple[tuple[str, str, str, type[QuotaExceededError] | type[StorageQuotaExceededError]], ...] = (
    ("max_sandboxes", "sandboxes", "sandbox(es)", QuotaExceededError),
    ("max_memory_mb", "memory_mb", "MiB of memory", QuotaExceededError),
    ("max_snapshots", "snapshots", "snapshot(s)", QuotaExceededError),
    ("max_disk_mb", "disk_mb", "MiB of disk", StorageQuotaExceededError),
)
_HOW = {
    "max_sandboxes": "stop or delete instances, restored sandboxes or function workers (scale down)",
    "max_memory_mb": "stop sandboxes or give them less memory",
    "max_snapshots": "delete snapshots",
    "max_disk_mb": "delete snapshots or stopped instances' files, or give instances smaller disks",
}


def check(namespace: str, quotas: Quotas, used: Usage, requested: Usage) -> None:
    """Raise when ``used + requested`` goes over one of ``quotas`` (counts and memory first: 429, then
    disk: 507). A request for nothing of a resource never fails on it, even over its quota."""
    for quota, attr, unit, error in _QUOTAS:
        limit: int | None = getattr(quotas, quota)
        want: int = getattr(requested, attr)
        have: int = getattr(used, attr)
        if limit is None or want <= 0 or have + want <= limit:
            continue
        raise error(
            f"namespace {namespace!r} is over its quota {quota}: the limit is {limit} {unit}, {have} in use, "
            f"this request needs {want} more; {_HOW[quota]}, or ask an admin to raise the quota",
            namespace=namespace,
            quota=quota,
            limit=limit,
            used=have,
            requested=want,
        )


class QuotaGuard:
    """Checks requests against a namespace's quotas, counting starts in flight as use.

    ``quotas_of(ns)`` reads a namespace's quotas, ``usage_of(ns)`` measures its current use."""

    def __init__(self, quotas_of: Callable[[str], Quotas], usage_of: Callable[[str], Usage]) -> None:
        self.quotas_of = quotas_of
        self.usage_of = usage_of
        self._pending: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def pending(self, namespace: str) -> Usage:
        with self._lock:
            return self._pending.get(namespace, Usage())

    def check(self, namespace: str, requested: Usage) -> None:
        """Raise if ``requested`` does not fit now (no reservation: for things created at once)."""
        quotas = self.quotas_of(namespace)
        if quotas == Quotas():
            return
        check(namespace, quotas, self.usage_of(namespace) + self.pending(namespace), requested)

    @contextmanager
    def reserve(self, namespace: str, requested: Usage) -> Iterator[None]:
        """Check ``requested`` and hold it as use while the block runs (a start in flight); the
        thing started counts by itself once the block is left."""
        quotas = self.quotas_of(namespace)
        if quotas == Quotas():
            yield
            return
        with self._lock:  # measured under the lock: a reservation ending meanwhile is counted once
            used = self.usage_of(namespace)
            pending = self._pending.get(namespace, Usage())
            check(namespace, quotas, used + pending, requested)
            self._pending[namespace] = pending + requested
        try:
            yield
        finally:
            with self._lock:
                left = self._pending.get(namespace, Usage()) - requested
                if left == Usage():
                    self._pending.pop(namespace, None)
                else:
                    self._pending[namespace] = left
