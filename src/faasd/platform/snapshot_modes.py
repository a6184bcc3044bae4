"""Function modes ``checkpointed`` and ``branched``: worker starts served by restores of snapshots.

* ``checkpointed``: the first worker of a function version is checkpointed right after its init (label
  ``faasd.kind=checkpoint`` with the function and :func:`version_key`); later cold starts restore from
  that checkpoint. A checkpoint that fails to restore is dropped and taken again. Functions with
  secrets start normally (a checkpoint would hold them).
* ``branched``: every worker is a restore of the function's ``branch_from`` snapshot.

:class:`FunctionSnapshotModes` plugs both into :class:`~faasd.platform.runner.FunctionRunner` as
per-mode starters (wired by :class:`~faasd.platform.snapshots.SnapshotService`). It uses the service
through the :class:`WorkerSnapshots` protocol (checkpoint/restore of workers), so this module does not
import the service.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from faasd.errors import FaasdError, InvalidInputError, NotFoundError
from faasd.platform.functions import BRANCH_FROM_ANNOTATION
from faasd.platform.metrics import Metrics
from faasd.platform.runtime_adapter import RuntimeWorker, RuntimeWorkerFactory
from faasd.platform.snapshot_meta import (
    CHECKPOINT_KIND,
    FUNCTION_LABEL,
    KIND_LABEL,
    VERSION_LABEL,
    version_key,
    worker_info,
    worker_spec_info,
)
from faasd.platform.worker_protocol import PoolWorker, WorkerConfig
from faasd.snapshots.store import Snapshot, SnapshotStore
from faasd.state import Function

log = logging.getLogger(__name__)


class WorkerSnapshots(Protocol):
    """What the function modes need of :class:`~faasd.platform.snapshots.SnapshotService`."""

    store: SnapshotStore
    factory: RuntimeWorkerFactory
    metrics: Metrics

    def op(self, op: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Counts the operation ``op`` in the metrics (ok / error)."""
        ...

    def children(self, snapshot_id: str) -> builtins.list[str]: ...

    def require(self, snapshot_id: str) -> Snapshot:
        """The snapshot, which must hold a process image."""
        ...

    async def restore_worker(
        self, snap: Snapshot, config: WorkerConfig | None, seed: int | None = None
    ) -> tuple[RuntimeWorker, float]:
        """A worker restored from ``snap`` and the restore time in ms."""
        ...

    async def checkpoint_worker(
        self, pw: PoolWorker, labels: dict[str, str], function: str | None
    ) -> Snapshot: ...

    def remember(self, rw: RuntimeWorker, info: dict[str, Any]) -> None:
        """Keep ``info`` (:func:`worker_info`) for snapshots of ``rw``."""
        ...


class FunctionSnapshotModes:
    def __init__(self, snapshots: WorkerSnapshots) -> None:
        self.snapshots = snapshots
        self.restored_workers: dict[str, str] = {}
        """Pool workers (checkpointed/branched modes) that are restores: worker id -> snapshot id."""
        self.restore_count: dict[str, int] = {}
        """Per function: cold starts served by a restore."""
        self._fn_locks: dict[str, asyncio.Lock] = {}

    @property
    def store(self) -> SnapshotStore:
        return self.snapshots.store

    @property
    def factory(self) -> RuntimeWorkerFactory:
        return self.snapshots.factory

    @property
    def metrics(self) -> Metrics:
        return self.snapshots.metrics

    def _lock_for(self, name: str) -> asyncio.Lock:
        return self._fn_locks.setdefault(name, asyncio.Lock())

    def checkpoint_of(self, function: str, version: str | None = None) -> Snapshot | None:
        for head in self.store.heads():  # every checkpointed cold start: not every manifest's file list
            lb = head.meta.labels
            if (
                lb.get(KIND_LABEL) == CHECKPOINT_KIND
                and lb.get(FUNCTION_LABEL) == function
                and (version is None or lb.get(VERSION_LABEL) == version)
            ):
                with contextlib.suppress(NotFoundError):
                    return self.store.get(head.id)
        return None

    def _track(
        self, rw: RuntimeWorker, snapshot_id: str, function: str, image_id: str | None
    ) -> RuntimeWorker:
        wid = rw.id
        self.restored_workers[wid] = snapshot_id
        self.restore_count[function] = self.restore_count.get(function, 0) + 1

        def forget() -> None:
            self.restored_workers.pop(wid, None)

        cleanups: builtins.list[Callable[[], None]] = [forget]
        images = self.factory.images
        if image_id is not None and images is not None:
            images.lease(image_id, wid)
            cleanups.append(lambda: images.release(image_id, wid))
        rw._on_close.extend(cleanups)
        return rw

    async def _image_id(self, ref: str) -> str | None:
        images = self.factory.images
        if images is None:
            return None
        image = await asyncio.to_thread(images.get, ref)
        return str(image.id)

    async def start_checkpointed(self, fn: Function, config: WorkerConfig) -> PoolWorker:
        if config.secrets:
            log.info(
                "function %s (checkpointed) has secrets: a checkpoint would hold them, starting normally",
                fn.name,
            )
            return await self.factory.start(config)
        image_id = await self._image_id(config.image)
        version = version_key(config, image_id or config.image)
        async with self._lock_for(fn.name):
            snap = await asyncio.to_thread(self.checkpoint_of, fn.name, version)
            if snap is None:
                return await self._first_start(fn, config, version, image_id)
        try:
            async with self.snapshots.op("restore"):
                rw, ms = await self.snapshots.restore_worker(snap, config)
        except FaasdError as exc:
            if not self.snapshots.children(snap.id):
                with contextlib.suppress(FaasdError):
                    await asyncio.to_thread(self.store.delete, snap.id)
            log.warning(
                "restoring function %s from checkpoint %s failed (%s); starting it normally "
                "and checkpointing it again",
                fn.name,
                snap.id,
                exc.message,
            )
            async with self._lock_for(fn.name):
                if await asyncio.to_thread(self.checkpoint_of, fn.name, version) is not None:
                    # the broken checkpoint is still there (it has children) or another start replaced it
                    return await self.factory.start(config)
                return await self._first_start(fn, config, version, image_id)
        log.info("worker %s of %s restored from checkpoint %s in %.1f ms", rw.id, fn.name, snap.id, ms)
        return self._track(rw, snap.id, fn.name, image_id)

    async def _first_start(
        self, fn: Function, config: WorkerConfig, version: str, image_id: str | None
    ) -> PoolWorker:
        pw = await self.factory.start(config)
        if not isinstance(pw, RuntimeWorker):
            return pw
        info = worker_info(pw.worker, image=config.image, image_id=image_id)
        info["function"] = fn.name
        self.snapshots.remember(pw, info)
        labels = {KIND_LABEL: CHECKPOINT_KIND, FUNCTION_LABEL: fn.name, VERSION_LABEL: version}
        try:
            async with self.snapshots.op("checkpoint"):
                snap = await self.snapshots.checkpoint_worker(pw, labels, fn.name)
        except FaasdError as exc:
            log.warning("checkpointing function %s failed (%s); later starts stay cold", fn.name, exc.message)
        else:
            log.info("function %s version %s checkpointed as %s", fn.name, version, snap.id)
        return pw

    async def start_from_snapshot(self, fn: Function, config: WorkerConfig) -> PoolWorker:
        snap_id = (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION)
        if not snap_id:
            raise InvalidInputError(f"function {fn.name!r} is branched but has no branch_from snapshot")
        async with self.snapshots.op("restore"):
            snap = self.snapshots.require(snap_id)
            rw, _ = await self.snapshots.restore_worker(snap, config)
        image_id = worker_spec_info(self.store, snap).get("image_id")
        return self._track(rw, snap.id, fn.name, image_id)

    async def invalidate(self, function: str) -> builtins.list[str]:
        """Drop the checkpoints of ``function`` (after an update or delete). Returns their ids."""
        removed: builtins.list[str] = []
        async with self._lock_for(function):
            for snap in await asyncio.to_thread(self.store.heads):
                lb = snap.meta.labels
                if lb.get(KIND_LABEL) == CHECKPOINT_KIND and lb.get(FUNCTION_LABEL) == function:
                    kids = self.snapshots.children(snap.id)
                    if kids:
                        # user snapshots of restored workers build on it: keep it (an unchanged version
                        # may still use it; a changed one never matches its version label again)
                        log.info(
                            "checkpoint %s of %s kept: snapshots %s build on it", snap.id, function, kids
                        )
                        continue
                    with contextlib.suppress(NotFoundError):
                        await asyncio.to_thread(self.store.delete, snap.id, force=True)
                        removed.append(snap.id)
        if removed:
            log.info("checkpoints of %s invalidated: %s", function, removed)
            self.metrics.snapshot_ops.labels("invalidate", "ok").inc(len(removed))
        return removed

    def function_status(self, function: str) -> dict[str, Any]:
        snap = self.checkpoint_of(function)
        return {"checkpoint": snap.id if snap else None, "restores": self.restore_count.get(function, 0)}
