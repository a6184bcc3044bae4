"""Which namespace owns what, what a namespace uses (for its quotas) and what it holds (for delete).

The owners: a function record's ``namespace``; a secret's; an instance's and a job's ``namespace`` column;
an execution's function id; a snapshot's label ``faasd.namespace`` (snapshots without it: the namespace
of the function or instance they were taken of, else their parent's, else the default one); a restored
sandbox's snapshot; a pool worker's function.

:meth:`Tenancy.visible` is the one check every route that takes an id of a snapshot, instance or
sandbox makes: an object of a namespace the caller may not see is answered exactly like an absent one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from faasd.errors import FaasdError, NotFoundError
from faasd.platform.namespaces import (
    DEFAULT_NAMESPACE,
    NAMESPACE_LABEL,
    Access,
    NamespaceService,
    namespace_of_function_id,
)
from faasd.platform.quotas import QuotaGuard, Usage
from faasd.state import ApiKey, Database, Execution, Function, LogLine, Secret
from faasd.state.instance_models import Instance, Job

if TYPE_CHECKING:
    from faasd.platform.instances import InstanceService
    from faasd.platform.runner import FunctionRunner
    from faasd.platform.snapshots import SnapshotService
    from faasd.snapshots.manifest import SnapshotHead, SnapshotInfo

INSTANCE_LABEL = "faasd.instance"
LIVE_INSTANCE = ("running", "paused")
"""Instance states that hold a sandbox (count against ``max_sandboxes``, memory and disk); an instance
being started holds a quota reservation instead."""
MiB = 1024 * 1024
_MAX_DEPTH = 256


def own_namespace(snap: SnapshotInfo, instance_namespace: Callable[[str], str | None]) -> str | None:
    """The namespace ``snap`` names itself (label, function id, instance), or None: its parent's."""
    labels = snap.meta.labels or {}
    if labels.get(NAMESPACE_LABEL):
        return labels[NAMESPACE_LABEL]
    fn = snap.meta.function or (snap.meta.extra.get("worker") or {}).get("function")
    if fn:
        return namespace_of_function_id(str(fn))
    inst = labels.get(INSTANCE_LABEL)
    if inst:
        return instance_namespace(inst)
    return None


def snapshot_namespace(
    snap: SnapshotInfo,
    instance_namespace: Callable[[str], str | None],
    parent_of: Callable[[str], SnapshotInfo | None] = lambda _id: None,
) -> str:
    """The namespace owning ``snap``: its own (:func:`own_namespace`), else its nearest ancestor's, else
    the default namespace."""
    current: SnapshotInfo | None = snap
    for _ in range(_MAX_DEPTH):
        if current is None:
            break
        ns = own_namespace(current, instance_namespace)
        if ns is not None:
            return ns
        current = parent_of(current.meta.parent) if current.meta.parent else None
    return DEFAULT_NAMESPACE


class Tenancy:
    """Ownership, use and quotas of namespaces across the platform's services."""

    def __init__(
        self,
        db: Database,
        namespaces: NamespaceService,
        runner: FunctionRunner,
        snapshots: SnapshotService | None,
        instances: InstanceService | None = None,
    ) -> None:
        self.db = db
        self.namespaces = namespaces
        self.runner = runner
        self.snapshots = snapshots
        self.instances = instances
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

    def _stored(self, snapshot_id: str) -> SnapshotHead | None:
        """A stored snapshot's head (no file trees: all ownership and quotas read), None if there is none."""
        if self.snapshots is None:
            return None
        try:
            return self.snapshots.store.head(snapshot_id)
        except FaasdError:
            return None

    def snapshot_namespace(self, snap: SnapshotInfo) -> str:
        return snapshot_namespace(snap, self.instance_namespace, self._stored)

    def snapshot_namespace_of(self, snapshot_id: str) -> str | None:
        """The namespace of a stored snapshot (None: no such snapshot)."""
        snap = self._stored(snapshot_id)
        return self.snapshot_namespace(snap) if snap is not None else None

    def snapshots_of(
        self, namespace: str | None, heads: list[SnapshotHead] | None = None
    ) -> list[SnapshotHead]:
        """Snapshots of ``namespace`` (None: all), oldest first, without their file trees; ``heads``: every
        stored snapshot's, when the caller has them."""
        if self.snapshots is None:
            return []
        snaps = self.snapshots.list() if heads is None else heads
        if namespace is None:
            return snaps
        by_id = {s.id: s for s in snaps}
        memo: dict[str, str] = {}

        def ns_of(snap: SnapshotHead) -> str:
            if snap.id not in memo:
                memo[snap.id] = snapshot_namespace(snap, self.instance_namespace, by_id.get)
            return memo[snap.id]

        return [s for s in snaps if ns_of(s) == namespace]

    def sandbox_namespace(self, sandbox_id: str) -> str | None:
        """The namespace of a running sandbox: a restored sandbox (its snapshot's), an instance or an
        instance's sandbox (the instance's), a function's pool worker (the function's); None: unknown."""
        if self.snapshots is not None:
            restored = self.snapshots.sandboxes.get(sandbox_id)
            if restored is not None:
                return self.snapshot_namespace_of(restored.snapshot_id) or DEFAULT_NAMESPACE
        if self.instances is not None:
            inst_id = self.instances.find(sandbox_id)
            if inst_id is not None:
                return self.instance_namespace(inst_id)
        for fid, pool in list(self.runner.pools.items()):
            if not pool.closed and sandbox_id in pool.worker_ids():
                return namespace_of_function_id(fid)
        return None

    def namespace_of(self, ref: str) -> str | None:
        """The namespace of a snapshot, instance or sandbox id (None: no such object)."""
        if ref.startswith("snap-"):
            return self.snapshot_namespace_of(ref)
        return self.sandbox_namespace(ref)

    def visible(self, access: Access, ref: str, what: str = "object") -> str:
        """``ref``'s namespace if ``access`` may see it; else the 404 an absent ``what`` gives."""
        ns = self.namespace_of(ref)
        if ns is None or not access.sees(ns):
            raise NotFoundError(f"{what} {ref[:80]!r} does not exist", id=ref[:80])
        return ns

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
        # Core SELECTs, not a session: this runs on worker starts, where a session would flush the
        # execution journal (see faasd.platform.executions.ExecutionJournal)
        with self.db.engine.connect() as conn:
            fns = conn.execute(
                select(Function.name, Function.memory_mb).where(Function.namespace == namespace)
            ).all()
            insts = conn.execute(
                select(Instance.memory_mb, Instance.disk_gb).where(
                    Instance.namespace == namespace, Instance.status.in_(LIVE_INSTANCE)
                )
            ).all()
        for fid, fn_memory in fns:
            n = self.runner.live_workers(fid)
            sandboxes += n
            memory += n * fn_memory
        for inst_memory, disk_gb in insts:
            sandboxes += 1
            memory += inst_memory
            disk += math.ceil(disk_gb * 1024)
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

    @contextmanager
    def instance_start(self, inst: Instance) -> Iterator[None]:
        """Held around an instance's start: one sandbox, its memory limit and its disk limit more."""
        need = Usage(sandboxes=1, memory_mb=inst.memory_mb, disk_mb=math.ceil(inst.disk_gb * 1024))
        with self.guard.reserve(inst.namespace, need):
            yield

    @contextmanager
    def restore_start(self, snapshot_id: str, count: int = 1) -> Iterator[None]:
        """Held around restoring ``count`` sandboxes from a snapshot (restore, branch): charged to the
        snapshot's namespace, each with the memory limit the snapshot was taken with."""
        snap = self._stored(snapshot_id)
        ns = self.snapshot_namespace(snap) if snap is not None else DEFAULT_NAMESPACE
        memory = int((snap.meta.limits or {}).get("memory_mb") or 0) if snap is not None else 0
        with self.guard.reserve(ns, Usage(sandboxes=count, memory_mb=count * memory)):
            yield

    def check_new_snapshot(self, namespace: str) -> None:
        """Before a snapshot is taken for ``namespace``: one more must fit ``max_snapshots``, and its disk
        quota must have room (at least 1 MiB: the snapshot's own size is known once it is written)."""
        self.guard.check(namespace, Usage(snapshots=1, disk_mb=1))

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
