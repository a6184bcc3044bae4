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
``faasd.function``, ``faasd.version``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from faasd.config import Settings
from faasd.errors import ConflictError, FaasdError, InvalidInputError, NotFoundError
from faasd.platform.functions import BRANCH_FROM_ANNOTATION, FunctionService
from faasd.platform.metrics import Metrics
from faasd.platform.pools import WarmPool
from faasd.platform.runner import POOLED_MODES, FunctionRunner
from faasd.platform.runtime_adapter import RuntimeWorker, RuntimeWorkerFactory, function_network
from faasd.platform.worker_protocol import (
    Invocation,
    InvocationResult,
    PoolWorker,
    WorkerConfig,
    WorkerFactory,
)
from faasd.runtime.checkpoint import Restored
from faasd.runtime.models import Limits
from faasd.runtime.sandbox import SandboxManager
from faasd.runtime.workers import Worker, WorkerSpec
from faasd.snapshots.seeds import check_seed, copy_seeds
from faasd.snapshots.service import branch as branch_snapshot
from faasd.snapshots.service import forget_sandbox, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import GcReport, Snapshot, SnapshotMeta, SnapshotStore
from faasd.state import Function

log = logging.getLogger(__name__)

KIND_LABEL = "faasd.kind"
FUNCTION_LABEL = "faasd.function"
VERSION_LABEL = "faasd.version"
CHECKPOINT_KIND = "checkpoint"
SNAPSHOT_ID_RE = re.compile(r"^snap-[A-Za-z0-9_-]{1,64}$")
AGENT_MODES = ("python", "node")
"""Worker modes whose agent reseeds PRNGs after a restore (a ``seed`` needs one of them)."""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RestoredSandbox:
    """A sandbox started from a snapshot by :meth:`SnapshotService.restore` / :meth:`branch`."""

    id: str
    snapshot_id: str
    function: str | None
    worker: RuntimeWorker
    restore_ms: float
    seed: int | None = None
    copy_index: int = 0
    """Index of this copy in its branch (0 for a single restore)."""
    created_at: str = field(default_factory=_now)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    invocations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "snapshot_id": self.snapshot_id,
            "function": self.function,
            "alive": self.worker.alive,
            "restore_ms": self.restore_ms,
            "invocations": self.invocations,
            "seed": self.seed,
            "copy_index": self.copy_index,
            "created_at": self.created_at,
        }


def worker_info(worker: Worker, image: str | None = None, image_id: str | None = None) -> dict[str, Any]:
    """What a restore needs to wrap the copy in a :class:`Worker` again (kept in ``meta.extra``)."""
    spec = worker.spec
    return {
        "function": spec.function,
        "mode": spec.mode,
        "handler": spec.handler,
        "port": spec.port,
        "code_dir": spec.code_dir,
        "fork_per_request": spec.fork_per_request,
        "network": function_network(spec.network.mode).mode,
        "image": image,
        "image_id": image_id,
    }


def version_key(config: WorkerConfig, image_id: str) -> str:
    """Identifies a function version for checkpoints: everything that shapes the initialised worker."""
    data = {
        "image_id": image_id,
        "runtime": config.runtime,
        "handler": config.handler,
        "command": config.command,
        "port": config.port,
        "env": dict(config.env),
        "limits": [config.memory_mb, config.cpu_cores, config.pids, config.disk_mb, config.timeout_s],
    }
    if config.network != "none":  # keeps the keys of existing checkpoints of functions without network
        data["network"] = config.network
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _function_of(snap: Snapshot) -> str | None:
    fn = snap.meta.function or (snap.meta.extra.get("worker") or {}).get("function")
    return str(fn) if fn else None


def snapshot_dict(
    snap: Snapshot, *, children: Sequence[str] = (), users: Sequence[str] = ()
) -> dict[str, Any]:
    meta = snap.meta
    return {
        "id": snap.id,
        "created_at": snap.created,
        "parent": meta.parent,
        "function": _function_of(snap),
        "source_sandbox": meta.source_sandbox,
        "kind": "process" if "criu" in snap.trees else "filesystem",
        "restorable": "criu" in snap.trees and "bundle" in snap.trees,
        "labels": dict(meta.labels),
        "sizes": asdict(snap.sizes),
        "merge": meta.extra.get("merge"),
        "children": list(children),
        "in_use_by": list(users),
    }


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
        self.hold_timeout_s = hold_timeout_s
        self.sandboxes: dict[str, RestoredSandbox] = {}
        self.restored_workers: dict[str, str] = {}
        """Pool workers (checkpointed/branched modes) that are restores: worker id -> snapshot id."""
        self.restore_count: dict[str, int] = {}
        """Per function: cold starts served by a restore."""
        self._fn_locks: dict[str, asyncio.Lock] = {}
        self._info: dict[str, dict[str, Any]] = {}
        """Worker id -> what a restore of its snapshot needs (``worker_info``), for workers that were
        started or restored with more context than the worker itself knows (image, function name)."""
        runner.starters["checkpointed"] = self._start_checkpointed
        runner.starters["branched"] = self._start_from_snapshot
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

    def list(self, function: str | None = None) -> builtins.list[Snapshot]:
        snaps = sorted(self.store.list(), key=lambda s: s.created)
        if function is not None:
            snaps = [s for s in snaps if _function_of(s) == function]
        return snaps

    def children(self, snapshot_id: str) -> builtins.list[str]:
        return [s.id for s in self.store.children(snapshot_id)]

    def users(self, snapshot_id: str) -> builtins.list[str]:
        """Live sandboxes and functions that depend on ``snapshot_id`` (directly or as an ancestor)."""
        out: builtins.list[str] = []
        for sb in self.sandboxes.values():
            with contextlib.suppress(FaasdError):
                if snapshot_id in [s.id for s in self.store.chain(sb.snapshot_id)]:
                    out.append(sb.id)
        for wid, sid in list(self.restored_workers.items()):
            with contextlib.suppress(FaasdError):
                if snapshot_id in [s.id for s in self.store.chain(sid)]:
                    out.append(wid)
        for fn in self.functions.list():
            if fn.mode == "branched" and (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION) == snapshot_id:
                out.append(f"function:{fn.name}")
        return out

    def view(self, snap: Snapshot) -> dict[str, Any]:
        return snapshot_dict(snap, children=self.children(snap.id), users=self.users(snap.id))

    def _find_pool_worker(self, sandbox_id: str) -> tuple[WarmPool, str] | None:
        for pool in list(self.runner.pools.values()):
            if not pool.closed and sandbox_id in pool.worker_ids():
                return pool, sandbox_id
        return None

    async def _checkpoint(self, pw: PoolWorker, labels: dict[str, str], function: str | None) -> Snapshot:
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
                        return await self._checkpoint(entry.worker, labels, entry.function)
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
                    return await self._checkpoint(pw, labels, pool.name)
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
                return await self._checkpoint(pw, labels, fn.name)

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
    def _worker_spec(self, snap: Snapshot, config: WorkerConfig | None = None) -> WorkerSpec:
        info: dict[str, Any] = {}
        for link in reversed(self.store.chain(snap.id)):
            info = link.meta.extra.get("worker") or {}
            if info:
                break
        if not info:
            raise InvalidInputError(
                f"snapshot {snap.id} was not taken from a faasd worker; it cannot be restored as one"
            )
        return WorkerSpec(
            function=config.function if config is not None else str(info.get("function") or "snapshot"),
            lowers=[],
            mode=info.get("mode", "python"),
            handler=info.get("handler"),
            port=int(info.get("port") or 8080),
            code_dir=info.get("code_dir") or "/function",
            fork_per_request=bool(info.get("fork_per_request")),
            network=function_network(config.network if config is not None else info.get("network")),
        )

    async def _attach(
        self, snap: Snapshot, restored: Restored, spec: WorkerSpec, started: float, seed: str | None = None
    ) -> tuple[RuntimeWorker, float]:
        try:
            worker = await Worker.attach(restored.sandbox, spec, restored=True, seed=seed)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(restored.sandbox.destroy())
            raise
        ms = round((time.perf_counter() - started) * 1000, 3)
        worker.init_ms = ms
        rw = RuntimeWorker(worker, [])
        self._remember(rw, dict(self._worker_spec_info(snap)))
        return rw, ms

    def _remember(self, rw: RuntimeWorker, info: dict[str, Any]) -> None:
        wid = rw.id
        self._info[wid] = info

        def forget() -> None:
            self._info.pop(wid, None)
            forget_sandbox(self.store, wid)

        rw._on_close.append(forget)

    def function_of_base(self, snapshot_id: str) -> str | None:
        """The function a snapshot's chain was taken from (None: e.g. an instance's)."""
        fn = self._worker_spec_info(self.store.get(snapshot_id)).get("function")
        return str(fn) if fn else None

    def _worker_spec_info(self, snap: Snapshot) -> dict[str, Any]:
        for link in reversed(self.store.chain(snap.id)):
            info = link.meta.extra.get("worker")
            if info:
                return dict(info)
        return {}

    def _limits(self, config: WorkerConfig | None) -> Limits | None:
        if config is None:
            return None
        return Limits(
            memory_mb=config.memory_mb,
            cpu_cores=config.cpu_cores,
            pids=config.pids,
            disk_mb=config.disk_mb,
            timeout_s=config.timeout_s,
        )

    async def _restore_worker(
        self, snap: Snapshot, config: WorkerConfig | None, seed: int | None = None
    ) -> tuple[RuntimeWorker, float]:
        spec = self._worker_spec(snap, config)
        self._check_seedable(snap, spec, seed)
        new_id = spec.new_sandbox_id()
        started = time.perf_counter()
        restored = await restore_snapshot(
            self.store, snap.id, new_id, manager=self.manager, limits=self._limits(config),
            notify_agent=False, network=spec.network,
        )
        [copy_seed] = copy_seeds(seed, 1)
        return await self._attach(snap, restored, spec, started, copy_seed)

    @staticmethod
    def _check_seedable(snap: Snapshot, spec: WorkerSpec, seed: int | None) -> None:
        check_seed(seed)
        if seed is not None and spec.mode not in AGENT_MODES:
            raise InvalidInputError(
                f"snapshot {snap.id} runs a function in mode {spec.mode!r}, which has no faasd agent to "
                "reseed its random generators; a seed needs a python or node function (restore or "
                "branch it without 'seed')",
                snapshot=snap.id,
                mode=spec.mode,
            )

    async def restore(self, snapshot_id: str, *, seed: int | None = None) -> RestoredSandbox:
        """Start a new sandbox from ``snapshot_id``; it is registered in :attr:`sandboxes`. With
        ``seed`` it is copy 0 of a branch with that seed (same PRNG state)."""
        async with self.op("restore"):
            snap = self.require(snapshot_id)
            rw, ms = await self._restore_worker(snap, None, seed)
            function = self._worker_spec_info(snap).get("function")
            entry = RestoredSandbox(rw.id, snap.id, function, rw, ms, seed=seed)
            self.sandboxes[entry.id] = entry
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
            spec = self._worker_spec(snap)
            self._check_seedable(snap, spec, seed)
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
            function = self._worker_spec_info(snap).get("function")
            for k, (rw, ms) in enumerate(workers):
                entry = RestoredSandbox(rw.id, snap.id, function, rw, ms, seed=seed, copy_index=k)
                self.sandboxes[entry.id] = entry
                out.append(entry)
            return out

    def sandbox(self, sandbox_id: str) -> RestoredSandbox:
        entry = self.sandboxes.get(sandbox_id)
        if entry is None:
            raise NotFoundError(
                f"restored sandbox {sandbox_id} does not exist (it was destroyed or never restored)",
                sandbox_id=sandbox_id,
            )
        return entry

    async def invoke(self, sandbox_id: str, invocation: Invocation) -> InvocationResult:
        entry = self.sandbox(sandbox_id)
        async with entry.lock:
            if not entry.worker.alive:
                raise ConflictError(
                    f"restored sandbox {sandbox_id} is no longer running; destroy it and restore again",
                    sandbox_id=sandbox_id,
                )
            entry.invocations += 1
            return await entry.worker.invoke(invocation)

    async def destroy(self, sandbox_id: str) -> None:
        entry = self.sandbox(sandbox_id)
        async with entry.lock:
            self.sandboxes.pop(sandbox_id, None)
            await entry.worker.close()
            forget_sandbox(self.store, sandbox_id)

    # ------------------------------------------------------------------ function modes
    def _lock_for(self, name: str) -> asyncio.Lock:
        return self._fn_locks.setdefault(name, asyncio.Lock())

    def checkpoint_of(self, function: str, version: str | None = None) -> Snapshot | None:
        for snap in self.store.list():
            lb = snap.meta.labels
            if (
                lb.get(KIND_LABEL) == CHECKPOINT_KIND
                and lb.get(FUNCTION_LABEL) == function
                and (version is None or lb.get(VERSION_LABEL) == version)
            ):
                return snap
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

    async def _start_checkpointed(self, fn: Function, config: WorkerConfig) -> PoolWorker:
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
            async with self.op("restore"):
                rw, ms = await self._restore_worker(snap, config)
        except FaasdError as exc:
            if not self.children(snap.id):
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
        self._remember(pw, info)
        labels = {KIND_LABEL: CHECKPOINT_KIND, FUNCTION_LABEL: fn.name, VERSION_LABEL: version}
        try:
            async with self.op("checkpoint"):
                snap = await self._checkpoint(pw, labels, fn.name)
        except FaasdError as exc:
            log.warning("checkpointing function %s failed (%s); later starts stay cold", fn.name, exc.message)
        else:
            log.info("function %s version %s checkpointed as %s", fn.name, version, snap.id)
        return pw

    async def _start_from_snapshot(self, fn: Function, config: WorkerConfig) -> PoolWorker:
        snap_id = (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION)
        if not snap_id:
            raise InvalidInputError(f"function {fn.name!r} is branched but has no branch_from snapshot")
        async with self.op("restore"):
            snap = self.require(snap_id)
            rw, _ = await self._restore_worker(snap, config)
        image_id = self._worker_spec_info(snap).get("image_id")
        return self._track(rw, snap.id, fn.name, image_id)

    async def invalidate(self, function: str) -> builtins.list[str]:
        """Drop the checkpoints of ``function`` (after an update or delete). Returns their ids."""
        removed: builtins.list[str] = []
        async with self._lock_for(function):
            for snap in await asyncio.to_thread(self.store.list):
                lb = snap.meta.labels
                if lb.get(KIND_LABEL) == CHECKPOINT_KIND and lb.get(FUNCTION_LABEL) == function:
                    kids = self.children(snap.id)
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

    async def close(self) -> None:
        entries, self.sandboxes = list(self.sandboxes.values()), {}
        await asyncio.gather(*(e.worker.close() for e in entries), return_exceptions=True)
