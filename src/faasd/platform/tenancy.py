"""Which namespace owns what, what a namespace uses (for its quotas) and what it holds (for delete).

The owners: a function record's ``namespace``; a secret's; an instance's and a job's ``namespace`` column;
an execution's function id; a snapshot's label ``faasd.namespace`` (older snapshots: the namespace of the
function or instance they were taken of, else the default one); a restored sandbox's snapshot.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from faasd.errors import FaasdError
from faasd.platform.namespaces import (
    DEFAULT_NAMESPACE,
    NAMESPACE_LABEL,
    NamespaceService,
    namespace_of_function_id,
)
from faasd.platform.quotas import QuotaGuard, Usage
from faasd.state import ApiKey, Database, Execution, Function, LogLine, Secret
from faasd.state.instance_models import Instance, Job

if TYPE_CHECKING:
    from faasd.platform.runner import FunctionRunner
    from faasd.platform.snapshots import SnapshotService
    from faasd.snapshots.store import Snapshot

INSTANCE_LABEL = "faasd.instance"
LIVE_INSTANCE = ("starting", "running", "paused")
"""Instance states that hold a sandbox (count against ``max_sandboxes``, memory and disk)."""
MiB = 1024 * 1024


def snapshot_namespace(snap: Snapshot, instance_namespace: Callable[[str], str | None]) -> str:
    """The namespace owning ``snap``."""
    labels = snap.meta.labels or {}
    if labels.get(NAMESPACE_LABEL):
        return labels[NAMESPACE_LABEL]
    fn = snap.meta.function or (snap.meta.extra.get("worker") or {}).get("function")
    if fn:
        return namespace_of_function_id(str(fn))
    inst = labels.get(INSTANCE_LABEL)
    if inst:
        return instance_namespace(inst) or DEFAULT_NAMESPACE
    return DEFAULT_NAMESPACE


class Tenancy:
    """Ownership, use and quotas of namespaces across the platform's services."""

    def __init__(
        self,
        db: Database,
        namespaces: NamespaceService,
        runner: FunctionRunner,
        snapshots: SnapshotService | None,
    ) -> None:
        self.db = db
        self.namespaces = namespaces
        self.runner = runner
        self.snapshots = snapshots
        self.guard = QuotaGuard(namespaces.quotas, self.usage)
        self._instance_ns: dict[str, str] = {}

    # -- ownership ---------------------------------------------------------------------------------
    def instance_namespace(self, instance_id: str) -> str | None:
        ns = self._instance_ns.get(instance_id)
        if ns is None:
            with self.db.session() as s:
                ns = s.scalar(select(Instance.namespace).where(Instance.id == instance_id))
            if ns is not None:
                self._instance_ns[instance_id] = ns
        return ns

    def snapshot_namespace(self, snap: Snapshot) -> str:
        return snapshot_namespace(snap, self.instance_namespace)

    def snapshot_namespace_of(self, snapshot_id: str) -> str | None:
        """The namespace of a stored snapshot (None: no such snapshot)."""
        if self.snapshots is None:
            return None
        try:
            return self.snapshot_namespace(self.snapshots.store.get(snapshot_id))
        except FaasdError:
            return None

    def snapshots_of(self, namespace: str | None) -> list[Snapshot]:
        """Snapshots of ``namespace`` (None: all), oldest first."""
        if self.snapshots is None:
            return []
        snaps = self.snapshots.list()
        if namespace is None:
            return snaps
        return [s for s in snaps if self.snapshot_namespace(s) == namespace]

    def executions(
        self, namespace: str | None, status: str | None = None, limit: int = 50
    ) -> list[Execution]:
        """The newest executions of ``namespace``'s functions (None: of every namespace)."""
        with self.db.session() as s:
            q = select(Execution)
            if namespace == DEFAULT_NAMESPACE:
                q = q.where(Execution.function.not_like("%.%"))
            elif namespace is not None:
                q = q.where(Execution.function.like(f"%.{namespace}"))
            if status:
                q = q.where(Execution.status == status)
            return list(s.scalars(q.order_by(Execution.created_at.desc()).limit(limit)))

    # -- use -----------------------------------------------------------------------------------------
    def usage(self, namespace: str) -> Usage:
        """What ``namespace`` uses now (see :mod:`faasd.platform.quotas` for what counts)."""
        sandboxes = memory = disk = 0
        with self.db.session() as s:
            fns = list(s.scalars(select(Function).where(Function.namespace == namespace)))
            insts = list(
                s.scalars(
                    select(Instance).where(
                        Instance.namespace == namespace, Instance.status.in_(LIVE_INSTANCE)
                    )
                )
            )
        for fn in fns:
            n = self.runner.live_workers(fn.name)
            sandboxes += n
            memory += n * fn.memory_mb
        for inst in insts:
            sandboxes += 1
            memory += inst.memory_mb
            disk += math.ceil(inst.disk_gb * 1024)
        snaps = self.snapshots_of(namespace)
        disk += math.ceil(sum(s.sizes.stored_bytes for s in snaps) / MiB)
        if self.snapshots is not None:
            ns_of = {s.id: namespace for s in snaps}
            for sb in list(self.snapshots.sandboxes.values()):
                if ns_of.get(sb.snapshot_id) == namespace and sb.worker.alive:
                    sandboxes += 1
                    memory += sb.worker.worker.spec.limits.memory_mb or 0
        return Usage(sandboxes=sandboxes, memory_mb=memory, disk_mb=disk, snapshots=len(snaps))

    @contextmanager
    def worker_start(self, fn: Function) -> Iterator[None]:
        """Held around a function worker's start: one sandbox and its memory limit more."""
        with self.guard.reserve(fn.namespace, Usage(sandboxes=1, memory_mb=fn.memory_mb)):
            yield

    # -- contents --------------------------------------------------------------------------------------
    def contents(self, namespace: str) -> dict[str, list[str]]:
        """What ``namespace`` holds (a namespace is deleted only when all of it is gone)."""
        with self.db.session() as s:
            functions = [
                f.name.partition(".")[0]
                for f in s.scalars(select(Function).where(Function.namespace == namespace))
            ]
            secrets = [
                x.name.partition("/")[2]
                for x in s.scalars(select(Secret).where(Secret.namespace == namespace))
            ]
            instances = list(s.scalars(select(Instance.id).where(Instance.namespace == namespace)))
            keys = list(s.scalars(select(ApiKey.id).where(ApiKey.namespace == namespace)))
        snaps = [snap.id for snap in self.snapshots_of(namespace)]
        return {
            "functions": functions,
            "secrets": secrets,
            "instances": instances,
            "snapshots": snaps,
            "keys": keys,
        }

    def purge_history(self, namespace: str) -> None:
        """Delete the executions, log lines and jobs of a namespace being deleted (so that a namespace
        created again under its name starts with none of them)."""
        if namespace == DEFAULT_NAMESPACE:
            return
        pattern = f"%.{namespace}"
        with self.db.session() as s:
            s.execute(delete(LogLine).where(LogLine.function.like(pattern)))
            s.execute(delete(Execution).where(Execution.function.like(pattern)))
            s.execute(delete(Job).where(Job.namespace == namespace))

    def forget_instance(self, instance_id: str) -> None:
        with contextlib.suppress(KeyError):
            del self._instance_ns[instance_id]
