"""Snapshots at the platform level: checkpoint running workers, restore/branch them, merge branches.

:class:`SnapshotService` sits on :mod:`faasd.snapshots` (store, checkpoint/restore, three-way merge)
and the platform's pools:

* :meth:`~SnapshotService.create` checkpoints a worker *while it is idle*: a pool worker is taken out
  of rotation (:meth:`WarmPool.hold`) until the dump is done; a restored sandbox is locked against its
  own invocations. The sandbox keeps running.
* :meth:`~SnapshotService.restore` / :meth:`~SnapshotService.branch` start new sandboxes from a
  snapshot; they are kept in a registry (``sandboxes``) and can be invoked, snapshotted again (nested
  branches) and destroyed. Each copy is told it was restored (PRNGs reseeded -- from
  ``copy_seed(seed, k)`` for copy ``k`` when a ``seed`` is given --, after-restore hooks).
* Merges (of these sandboxes, instances or snapshots) are :mod:`faasd.platform.merges`.
* Function modes ``checkpointed`` (the first worker of a function version is checkpointed right after
  its init; later cold starts restore from it) and ``branched`` (every worker is a restore of the
  function's ``branch_from`` snapshot) plug into :class:`FunctionRunner` as per-mode starters.

Metadata lives in the snapshot store's manifests (``SnapshotMeta``): ``extra["worker"]`` records what
a restore needs to talk to the agent, labels mark checkpoints (``faasd.kind=checkpoint``,
``faasd.function``, ``faasd.version``); those labels, the worker info, :class:`RestoredSandbox` and
the JSON view of a snapshot are :mod:`faasd.platform.snapshot_meta`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from faasd.config import Settings
from faasd.errors import ConflictError, InvalidInputError, NotFoundError, ResourceLimitError
from faasd.platform.functions import BRANCH_FROM_ANNOTATION, FunctionService
from faasd.platform.invocation import Invocation, Outcome, invoke_request
from faasd.platform.metrics import Metrics
from faasd.platform.pools import WarmPool
from faasd.platform.runner import POOLED_MODES, FunctionRunner
from faasd.platform.runtime_adapter import RuntimeWorker, RuntimeWorkerFactory
from faasd.platform.snapshot_meta import (
    AGENT_MODES,
    CHECKPOINT_KIND,
    FUNCTION_LABEL,
    KIND_LABEL,
    RESTORED_OWNER,
    SNAPSHOT_ID_RE,
    VERSION_LABEL,
    RestoredSandbox,
    check_seedable,
    function_of,
    restore_limits,
    snapshot_dict,
    version_key,
    worker_info,
    worker_spec,
    worker_spec_info,
)
from faasd.platform.snapshot_modes import FunctionSnapshotModes
from faasd.platform.worker_protocol import PoolWorker, WorkerConfig, WorkerFactory
from faasd.runtime.adopt import write_record
from faasd.runtime.restore import Restored
from faasd.runtime.sandbox import SandboxManager
from faasd.runtime.workers import Worker, WorkerSpec
from faasd.snapshots.image_cache import sweep_orphans
from faasd.snapshots.manifest import SnapshotHead, SnapshotInfo
from faasd.snapshots.seeds import copy_seeds
from faasd.snapshots.service import branch as branch_snapshot
from faasd.snapshots.service import forget_sandbox, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import GcReport, Snapshot, SnapshotMeta, SnapshotStore

log = logging.getLogger(__name__)

SANDBOX_INVOKE_TIMEOUT_S = 30.0
"""How long one request to a restored sandbox may run."""

__all__ = [
    "AGENT_MODES",
    "CHECKPOINT_KIND",
    "FUNCTION_LABEL",
    "KIND_LABEL",
    "SNAPSHOT_ID_RE",
    "VERSION_LABEL",
    "RestoredSandbox",
    "SnapshotService",
    "missing_sandbox",
    "snapshot_dict",
    "version_key",
    "worker_info",
]


def missing_sandbox(sandbox_id: str) -> NotFoundError:
    """The 404 of a restored sandbox that does not exist (or that the caller may not see)."""
    return NotFoundError(
        f"restored sandbox {sandbox_id} does not exist (it was destroyed or never restored)",
        sandbox_id=sandbox_id,
    )


class SnapshotService:
    def __init__(
        self,
        settings: Settings,
        store: SnapshotStore,
        manager: SandboxManager,
        factory: RuntimeWorkerFactory,
        runner: FunctionRunner,
        functions: FunctionService,
        metrics: Metrics,
        *,
        hold_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.manager = manager
        self.factory = factory
        """The :class:`RuntimeWorkerFactory` (normal starts, image store)."""
        self.runner = runner
        self.functions = functions
        self.metrics = metrics
        metrics.snapshot_image_cache.set_function(lambda: float(store.image_cache.used_bytes()))
        self.hold_timeout_s = hold_timeout_s
        self.sandboxes: dict[str, RestoredSandbox] = {}
        self._info: dict[str, dict[str, Any]] = {}
        """Worker id -> what a restore of its snapshot needs (``worker_info``), for workers that were
        started or restored with more context than the worker itself knows (image, function name)."""
        self.modes = FunctionSnapshotModes(self)
        runner.starters["checkpointed"] = self.modes.start_checkpointed
        runner.starters["branched"] = self.modes.start_from_snapshot
        functions.snapshot_check = self._check_restorable

    @classmethod
    def for_platform(
        cls,
        settings: Settings,
        factory: WorkerFactory,
        runner: FunctionRunner,
        functions: FunctionService,
        metrics: Metrics,
    ) -> SnapshotService | None:
        """The service when the platform runs real sandboxes (a :class:`RuntimeWorkerFactory`), else None."""
        if not isinstance(factory, RuntimeWorkerFactory):
            return None
        sweep_orphans(settings.image_cache_dir.parent)  # process images in memory of data dirs now gone
        return cls(settings, SnapshotStore(settings), factory.manager, factory, runner, functions, metrics)

    # ------------------------------------------------------------------ helpers
    @contextlib.asynccontextmanager
    async def op(self, op: str) -> AsyncIterator[None]:
        try:
            yield
        except BaseException:
            self.metrics.snapshot_ops.labels(op, "error").inc()
            raise
        self.metrics.snapshot_ops.labels(op, "ok").inc()

    def _check_restorable(self, snapshot_id: str) -> None:
        self.require(snapshot_id)

    def require(self, snapshot_id: str) -> Snapshot:
        snap = self.get(snapshot_id)
        if "criu" not in snap.trees or "bundle" not in snap.trees:
            raise InvalidInputError(
                f"snapshot {snapshot_id} has no process image (e.g. a merge result) and cannot be restored",
                snapshot=snapshot_id,
            )
        return snap

    def get(self, snapshot_id: str) -> Snapshot:
        if not SNAPSHOT_ID_RE.match(snapshot_id):
            raise NotFoundError(
                f"snapshot {snapshot_id[:80]!r} does not exist (ids look like 'snap-<hex>')",
                snapshot=snapshot_id[:80],
            )
        return self.store.get(snapshot_id)

    def list(self, function: str | None = None) -> builtins.list[SnapshotHead]:
        """Stored snapshots (of ``function``: taken from its workers), oldest first, without their file
        trees (:meth:`get` reads one whole)."""
        snaps = self.store.heads()
        if function is not None:
            snaps = [s for s in snaps if function_of(s) == function]
        return snaps

    def children(self, snapshot_id: str, heads: Sequence[SnapshotHead] | None = None) -> builtins.list[str]:
        return [s.id for s in self.store.children(snapshot_id, heads)]

    def users(self, snapshot_id: str, heads: Sequence[SnapshotHead] | None = None) -> builtins.list[str]:
        """Live sandboxes and functions that depend on ``snapshot_id`` (directly or as an ancestor);
        ``heads``: the store's, when the caller has them (a listing)."""
        out: builtins.list[str] = []
        parents = {h.id: h.meta.parent for h in (self.store.heads() if heads is None else heads)}

        def depends(sid: str | None) -> bool:  # sid or one of its ancestors is snapshot_id
            seen: set[str] = set()
            while sid is not None and sid not in seen:
                if sid == snapshot_id:
                    return True
                seen.add(sid)
                sid = parents.get(sid)
            return False

        for sb in self.sandboxes.values():
            if depends(sb.snapshot_id):
                out.append(sb.id)
        for wid, sid in list(self.restored_workers.items()):
            if depends(sid):
                out.append(wid)
        for fn in self.functions.list():
            if fn.mode == "branched" and (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION) == snapshot_id:
                out.append(f"function:{fn.name}")
        return out

    def view(self, snap: SnapshotInfo, heads: Sequence[SnapshotHead] | None = None) -> dict[str, Any]:
        """``snap`` as the API shows it; ``heads``: every stored snapshot's, when the caller lists them
        (read once for the whole listing instead of twice per snapshot)."""
        heads = self.store.heads() if heads is None else heads
        return snapshot_dict(snap, children=self.children(snap.id, heads), users=self.users(snap.id, heads))

    def _find_pool_worker(self, sandbox_id: str) -> tuple[WarmPool, str] | None:
        for pool in list(self.runner.pools.values()):
            if not pool.closed and sandbox_id in pool.worker_ids():
                return pool, sandbox_id
        return None

    async def checkpoint_worker(
        self, pw: PoolWorker, labels: dict[str, str], function: str | None
    ) -> Snapshot:
        if not isinstance(pw, RuntimeWorker):
            raise InvalidInputError(f"worker {pw.id} does not run in a sandbox this daemon can checkpoint")
        worker = pw.worker
        if not worker.alive:
            raise ConflictError(f"sandbox {worker.id} is not running; it cannot be snapshotted")
        if worker.direct:  # its direct-address socket belongs to the host's netns: not into the image
            await worker.unlisten()
        info = dict(self._info.get(pw.id) or worker_info(worker))
        meta = SnapshotMeta(
            function=function or info.get("function"),
            image_ref=info.get("image"),
            labels=dict(labels),
            extra={"worker": info},
        )
        return await snapshot_sandbox(self.store, worker.sandbox, meta)

    # ------------------------------------------------------------------ snapshot / inspect / delete
    async def create(
        self,
        *,
        sandbox_id: str | None = None,
        function: str | None = None,
        labels: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Snapshot:
        """Checkpoint a running sandbox (by id) or an idle worker of ``function`` (one is started if the
        pool is empty). Waits up to ``timeout_s`` for the worker to finish its request in flight."""
        timeout = self.hold_timeout_s if timeout_s is None else timeout_s
        labels = dict(labels or {})
        async with self.op("checkpoint"):
            if sandbox_id is None and function is None:
                raise InvalidInputError("give 'sandbox_id' or 'function' to snapshot")
            if sandbox_id is not None:
                entry = self.sandboxes.get(sandbox_id)
                if entry is not None:
                    try:
                        async with asyncio.timeout(timeout):
                            await entry.lock.acquire()
                    except TimeoutError:
                        raise ConflictError(
                            f"sandbox {sandbox_id} stayed busy for {timeout:g} s; retry later",
                            sandbox_id=sandbox_id,
                        ) from None
                    try:
                        return await self.checkpoint_worker(entry.worker, labels, entry.function)
                    finally:
                        entry.lock.release()
                found = self._find_pool_worker(sandbox_id)
                if found is None:
                    raise NotFoundError(
                        f"sandbox {sandbox_id} is not a running worker or restored sandbox of this daemon",
                        sandbox_id=sandbox_id,
                    )
                pool, wid = found
                async with pool.hold(wid, timeout) as pw:
                    return await self.checkpoint_worker(pw, labels, pool.name)
            assert function is not None
            fn = self.functions.get(function)
            if fn.mode not in POOLED_MODES:
                raise InvalidInputError(
                    f"function {function!r} runs in mode {fn.mode!r} (no long-lived workers); "
                    "snapshot a cached, checkpointed or branched function, or a sandbox by id"
                )
            pool = await self.runner.pool_for(fn)
            ids = pool.worker_ids()
            if not ids:
                lease = await pool.acquire(timeout)
                await pool.release(lease)
                ids = [lease.worker.id]
            async with pool.hold(ids[0], timeout) as pw:
                return await self.checkpoint_worker(pw, labels, fn.name)

    async def delete(self, snapshot_id: str, *, force: bool = False) -> None:
        async with self.op("delete"):
            self.get(snapshot_id)
            users = self.users(snapshot_id)
            kids = self.children(snapshot_id)
            if (users or kids) and not force:
                raise ConflictError(
                    f"snapshot {snapshot_id} is in use by {users + kids}; delete those first or pass force",
                    users=users,
                    children=kids,
                )
            await asyncio.to_thread(self.store.delete, snapshot_id, force=True)

    async def gc(self) -> GcReport:
        async with self.op("gc"):
            return await asyncio.to_thread(self.store.gc)

    # ------------------------------------------------------------------ restore / branch
    async def _attach(
        self, snap: Snapshot, restored: Restored, spec: WorkerSpec, started: float, seed: str | None = None
    ) -> tuple[RuntimeWorker, float]:
        attaching = time.perf_counter()
        try:
            worker = await Worker.attach(restored.sandbox, spec, restored=True, seed=seed)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(restored.sandbox.destroy())
            raise
        now = time.perf_counter()
        ms = round((now - started) * 1000, 3)
        worker.init_ms = ms
        log.info(
            "sandbox %s restored from %s in %.1f ms: restore %.1f ms %s, agent attach %.1f ms",
            restored.sandbox.id, snap.id, ms, (attaching - started) * 1000,
            {k: round(v, 1) for k, v in restored.timings_ms.items()}, (now - attaching) * 1000,
        )
        rw = RuntimeWorker(worker, [])
        self.remember(rw, dict(worker_spec_info(self.store, snap)))
        return rw, ms

    def remember(self, rw: RuntimeWorker, info: dict[str, Any]) -> None:
        wid = rw.id
        self._info[wid] = info

        def forget() -> None:
            self._info.pop(wid, None)
            forget_sandbox(self.store, wid)

        rw._on_close.append(forget)

    def function_of_base(self, snapshot_id: str) -> str | None:
        """The function a snapshot's chain was taken from (None: e.g. an instance's)."""
        fn = worker_spec_info(self.store, self.store.get(snapshot_id)).get("function")
        return str(fn) if fn else None

    async def restore_worker(
        self, snap: Snapshot, config: WorkerConfig | None, seed: int | None = None
    ) -> tuple[RuntimeWorker, float]:
        spec = worker_spec(self.store, snap, config)
        check_seedable(snap, spec, seed)
        new_id = spec.new_sandbox_id()
        started = time.perf_counter()
        restored = await restore_snapshot(
            self.store, snap.id, new_id, manager=self.manager, limits=restore_limits(config),
            notify_agent=False, network=spec.network,
        )
        [copy_seed] = copy_seeds(seed, 1)
        return await self._attach(snap, restored, spec, started, copy_seed)

    async def restore(self, snapshot_id: str, *, seed: int | None = None) -> RestoredSandbox:
        """Start a new sandbox from ``snapshot_id``; it is registered in :attr:`sandboxes`. With
        ``seed`` it is copy 0 of a branch with that seed (same PRNG state)."""
        async with self.op("restore"):
            snap = self.require(snapshot_id)
            rw, ms = await self.restore_worker(snap, None, seed)
            function = worker_spec_info(self.store, snap).get("function")
            entry = RestoredSandbox(rw.id, snap.id, function, rw, ms, seed=seed)
            self.sandboxes[entry.id] = entry
            self._keep(entry)
            return entry

    async def branch(
        self, snapshot_id: str, count: int, *, seed: int | None = None
    ) -> builtins.list[RestoredSandbox]:
        """``count`` independent copies of ``snapshot_id`` (all or nothing), in copy order. With
        ``seed``, copy ``k`` reseeds its PRNGs from ``copy_seed(seed, k)`` (a repeatable branch)."""
        if not 1 <= count <= 64:
            raise InvalidInputError(f"branch count must be between 1 and 64, got {count}")
        async with self.op("branch"):
            snap = self.require(snapshot_id)
            spec = worker_spec(self.store, snap)
            check_seedable(snap, spec, seed)
            ids = [spec.new_sandbox_id() for _ in range(count)]
            started = time.perf_counter()
            copies = await branch_snapshot(
                self.store, snap.id, ids, manager=self.manager, notify_agent=False, network=spec.network
            )
            seeds = copy_seeds(seed, count)
            results = await asyncio.gather(
                *(
                    self._attach(snap, r, spec, started, k_seed)
                    for r, k_seed in zip(copies, seeds, strict=True)
                ),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            workers = [r for r in results if not isinstance(r, BaseException)]
            if errors:
                for rw, _ in workers:
                    await rw.close()
                raise errors[0]
            out: builtins.list[RestoredSandbox] = []
            function = worker_spec_info(self.store, snap).get("function")
            for k, (rw, ms) in enumerate(workers):
                entry = RestoredSandbox(rw.id, snap.id, function, rw, ms, seed=seed, copy_index=k)
                self.sandboxes[entry.id] = entry
                out.append(entry)
            for entry in out:  # only a whole branch outlives a daemon crash
                self._keep(entry)
            return out

    def _keep(self, entry: RestoredSandbox) -> None:
        """Mark a restored sandbox for re-adoption after a daemon restart (``faasd.platform.adoption``)."""
        try:
            write_record(
                entry.worker.worker.sandbox, RESTORED_OWNER, entry.record_data(self._info.get(entry.id, {}))
            )
        except OSError as exc:
            log.warning("restored sandbox %s: could not write its adoption record: %s", entry.id, exc)

    def sandbox(self, sandbox_id: str) -> RestoredSandbox:
        entry = self.sandboxes.get(sandbox_id)
        if entry is None:
            raise missing_sandbox(sandbox_id)
        return entry

    async def invoke(self, sandbox_id: str, invocation: Invocation) -> Outcome:
        """One request to a restored sandbox (all headers forwarded, no execution record)."""
        entry = self.sandbox(sandbox_id)
        async with entry.lock:
            if not entry.worker.alive:
                raise ConflictError(
                    f"restored sandbox {sandbox_id} is no longer running; destroy it and restore again",
                    sandbox_id=sandbox_id,
                )
            entry.invocations += 1
            req = invoke_request(
                invocation,
                headers=dict(invocation.headers),
                timeout_s=SANDBOX_INVOKE_TIMEOUT_S,
                request_id=os.urandom(8).hex(),
            )
            t0 = time.monotonic()
            try:
                result = await entry.worker.invoke(req)
            except ResourceLimitError as exc:
                return Outcome.of_limit(exc, wall_ms=(time.monotonic() - t0) * 1000)
            return Outcome.of_result(result, wall_ms=(time.monotonic() - t0) * 1000)

    async def destroy(self, sandbox_id: str) -> None:
        entry = self.sandbox(sandbox_id)
        async with entry.lock:
            self.sandboxes.pop(sandbox_id, None)
            await entry.worker.close()
            forget_sandbox(self.store, sandbox_id)

    # ------------------------------------------------------------------ function modes
    @property
    def restored_workers(self) -> dict[str, str]:
        """Pool workers (checkpointed/branched modes) that are restores: worker id -> snapshot id."""
        return self.modes.restored_workers

    @property
    def restore_count(self) -> dict[str, int]:
        """Per function: cold starts served by a restore."""
        return self.modes.restore_count

    def checkpoint_of(self, function: str, version: str | None = None) -> Snapshot | None:
        return self.modes.checkpoint_of(function, version)

    async def invalidate(self, function: str) -> builtins.list[str]:
        """Drop the checkpoints of ``function`` (after an update or delete). Returns their ids."""
        return await self.modes.invalidate(function)

    def function_status(self, function: str) -> dict[str, Any]:
        return self.modes.function_status(function)

    async def close(self) -> None:
        entries, self.sandboxes = list(self.sandboxes.values()), {}
        await asyncio.gather(*(e.worker.close() for e in entries), return_exceptions=True)
        await asyncio.to_thread(self.store.image_cache.clear)  # unpacked process images: memory back
