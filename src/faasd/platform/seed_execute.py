"""``POST /api/v1/execute`` in the seed platform's five modes, on faasd's sandboxes, instances and snapshots.

* ``ephemeral``: a fresh sandbox per run (a warm one from :class:`WarmExecPool` when one is pooled for
  the image, runtime and limits; otherwise :class:`ExecuteService` creates one), destroyed afterwards.
* ``cached``: a bounded, expiring result cache (:class:`ResultCache`) keyed by ``cache_key`` or by a hash
  of image digest + argv + env + stdin + limits; a miss runs like ``ephemeral``. Only clean results
  (exit 0, no timeout, no OOM kill) are kept.
* ``checkpointed``: a sandbox running ``faasd-init`` (an instance) on the image -- or restored from
  ``snapshot_id`` -- runs the command, then is snapshotted with CRIU (processes + files): the answer's
  ``snapshot``. The snapshot carries the label ``faasd.execute.request=<request_id>``.
* ``branched``: ``branch_from`` is a snapshot id or the request id of an earlier checkpointed or
  persistent execution; the command runs in a restored copy of that state, which is then discarded
  (the source is untouched; a persistent workspace is snapshotted for the copy and keeps running).
* ``persistent``: a workspace (an instance named ``execute:<request_id>``) kept across calls -- files and
  processes -- until it has been idle for its TTL; later calls name it with ``workspace``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faasd.errors import FaasdError, InvalidInputError, NotFoundError
from faasd.platform.exec_ephemeral import MAX_OUTPUT_BYTES, ExecuteService
from faasd.platform.exec_pool import PoolKey, WarmExecPool
from faasd.platform.exec_stats import ExecMetrics, ResultCache, cache_key_for
from faasd.platform.instances import ExecCommand, InstanceService, InstanceSpec
from faasd.platform.seed_models import DEFAULT_WORKSPACE_TTL_S, SeedExecuteRequest
from faasd.platform.snapshots import SnapshotService, snapshot_dict
from faasd.runtime.sandbox import Sandbox

log = logging.getLogger(__name__)

REQUEST_LABEL = "faasd.execute.request"
WORKSPACE_PREFIX = "execute:"
MAX_RECORDS = 512
MAX_PARALLEL_FORKS = 2


@dataclass
class _Workspace:
    instance_id: str
    ttl_s: float
    last_used: float


class SeedExecuteService:
    def __init__(
        self,
        execute: ExecuteService,
        resolve_image: Callable[[str], Awaitable[Any]],
        *,
        pool: WarmExecPool | None = None,
        instances: InstanceService | None = None,
        snapshots: SnapshotService | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.execute_service = execute
        self.resolve_image = resolve_image
        self.pool = pool
        self.instances = instances
        self.snapshots = snapshots
        self.cache = cache or ResultCache()
        self.metrics = ExecMetrics()
        self.records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.workspaces: dict[str, _Workspace] = {}
        self._reaper: asyncio.Task[None] | None = None

    # -- entry points -------------------------------------------------------------------------
    async def execute(self, req: SeedExecuteRequest, request_id: str | None = None) -> dict[str, Any]:
        req.check()
        mode = req.effective_mode
        settings = self.execute_service.settings
        runtime = req.effective_runtime(settings.isolation if settings is not None else "runc")
        request_id = request_id or "rq_" + secrets.token_hex(10)
        started = time.perf_counter()
        try:
            answer = await self._dispatch(mode, runtime, req, request_id)
        except FaasdError:
            self.metrics.failed(mode, runtime, (time.perf_counter() - started) * 1000)
            raise
        latency = (time.perf_counter() - started) * 1000
        self.metrics.record(
            mode=mode,
            runtime=runtime,
            latency_ms=latency,
            cache_hit=answer["cache_hit"],
            start=answer.get("start"),
            start_ms=latency if answer.get("start") in ("cold", "warm") else None,
            failed=answer["exit_code"] != 0,
        )
        self._remember(answer)
        return answer

    async def fork(self, parent_id: str, req: SeedExecuteRequest) -> dict[str, Any]:
        """Run ``req``'s command in a copy of execution ``parent_id``'s state."""
        update = {"mode": "branched", "branch_from": parent_id}
        return await self.execute(req.model_copy(update=update))

    async def fork_many(
        self, branch_from: str, reqs: builtins.list[SeedExecuteRequest]
    ) -> builtins.list[Any]:
        """Each request in its own copy of ``branch_from``; answers in the order of ``reqs``."""
        gate = asyncio.Semaphore(MAX_PARALLEL_FORKS)

        async def one(r: SeedExecuteRequest) -> dict[str, Any]:
            async with gate:
                return await self.fork(branch_from, r)

        return list(await asyncio.gather(*(one(r) for r in reqs)))

    def record(self, request_id: str) -> dict[str, Any]:
        rec = self.records.get(request_id)
        if rec is None:
            raise NotFoundError(
                f"no execution {request_id!r} among the last {MAX_RECORDS} executions of this daemon",
                request_id=request_id,
            )
        return rec

    # -- modes --------------------------------------------------------------------------------
    async def _dispatch(
        self, mode: str, runtime: Any, req: SeedExecuteRequest, request_id: str
    ) -> dict[str, Any]:
        if mode == "ephemeral":
            return await self._run_fresh(req, runtime, request_id, mode)
        if mode == "cached":
            return await self._cached(req, runtime, request_id)
        if mode == "checkpointed":
            return await self._checkpointed(req, request_id)
        if mode == "branched":
            assert req.branch_from is not None
            return await self._branched(req, req.branch_from, request_id)
        return await self._persistent(req, request_id)

    async def _run_fresh(
        self, req: SeedExecuteRequest, runtime: Any, request_id: str, mode: str
    ) -> dict[str, Any]:
        image = await self.resolve_image(req.image_ref())
        sb = None
        if self.pool is not None:
            sb = self.pool.take(PoolKey(image.id, runtime, req.memory_mb, req.cpu_cores))
        if sb is not None:
            try:
                res = await self._exec_in(sb, req)
            finally:
                await sb.destroy()
            return self._answer(req, request_id, mode, runtime, res, start="warm", sandbox_id=sb.id)
        plain = req.model_copy(update={"mode": "ephemeral"})
        res = await self.execute_service.execute(plain, runtime=runtime)
        return self._answer(req, request_id, mode, runtime, res, start="cold")

    async def _exec_in(self, sb: Sandbox, req: SeedExecuteRequest) -> dict[str, Any]:
        started = time.perf_counter()
        r = await sb.exec(
            req.args(),
            stdin=(req.stdin or "").encode(),
            timeout=req.timeout_ms / 1000,
            env=dict(req.env_vars),
            cwd=req.working_dir,
        )
        oom = await asyncio.to_thread(sb.oom_kills) > 0
        return {
            "exit_code": 137 if oom and r.exit_code >= 0 else r.exit_code,
            "stdout": r.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            "stderr": r.stderr[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "timed_out": r.timed_out,
            "oom_killed": oom,
        }

    async def _cached(self, req: SeedExecuteRequest, runtime: Any, request_id: str) -> dict[str, Any]:
        if req.cache_key is not None:
            key = "k:" + req.cache_key
        else:
            image = await self.resolve_image(req.image_ref())
            limits = {"memory_mb": req.memory_mb, "cpu_cores": req.cpu_cores, "cwd": req.working_dir}
            key = cache_key_for(image.id, req.args(), req.env_vars, req.stdin, {**limits, "runtime": runtime})
        hit = self.cache.get(key)
        if hit is not None:
            return {
                **hit,
                "request_id": request_id,
                "cache_hit": True,
                "cached_request_id": hit["request_id"],
                "start": None,
                "duration_ms": 0.0,
                "run_duration_ms": hit["duration_ms"],
            }
        answer = await self._run_fresh(req, runtime, request_id, "cached")
        answer["cache_key"] = req.cache_key or key
        if answer["exit_code"] == 0 and not answer["timed_out"] and not answer["oom_killed"]:
            self.cache.put(key, dict(answer))
        return answer

    def _instances(self) -> InstanceService:
        if self.instances is None or self.snapshots is None:
            raise InvalidInputError(
                "modes checkpointed, branched and persistent need real sandboxes and the snapshot store; "
                "this daemon runs without them"
            )
        return self.instances

    def _exec_request(self, req: SeedExecuteRequest) -> ExecCommand:
        return ExecCommand(
            args=req.args(),
            stdin=(req.stdin or "").encode(),
            env=dict(req.env_vars),
            cwd=req.working_dir,
            timeout_s=req.timeout_ms / 1000,
        )

    async def _checkpointed(self, req: SeedExecuteRequest, request_id: str) -> dict[str, Any]:
        instances = self._instances()
        assert self.snapshots is not None
        if req.snapshot_id is not None:
            self.snapshots.require(req.snapshot_id)
            start = InstanceSpec(
                snapshot_id=req.snapshot_id, memory_mb=req.memory_mb, cpu_cores=req.cpu_cores
            )
        else:
            await self.resolve_image(req.image_ref())
            start = InstanceSpec(
                image=req.image_ref(), memory_mb=req.memory_mb, cpu_cores=req.cpu_cores
            )
        inst = await instances.create(
            dataclasses.replace(start, name=WORKSPACE_PREFIX + request_id + ":ckpt")
        )
        try:
            res = await instances.exec(inst.id, self._exec_request(req))
            snap = await instances.snapshot(inst.id, labels={REQUEST_LABEL: request_id})
        finally:
            await instances.delete(inst.id)
        answer = self._answer(
            req, request_id, "checkpointed", "runc", res, start="restore" if req.snapshot_id else "cold"
        )
        answer["snapshot"] = snapshot_dict(snap)
        answer["snapshot_id"] = req.snapshot_id
        return answer

    async def _source_snapshot(self, ref: str) -> tuple[str, bool]:
        """The snapshot to branch from for ``ref`` (snapshot id or request id) and whether it is temporary."""
        assert self.snapshots is not None and self.instances is not None
        if ref.startswith("snap-"):
            self.snapshots.require(ref)
            return ref, False
        ws = self._workspace(ref, required=False)
        if ws is not None:
            snap = await self.instances.snapshot(ws.instance_id, labels={"faasd.execute.branch-of": ref})
            ws.last_used = time.monotonic()
            return snap.id, True
        for head in await asyncio.to_thread(self.snapshots.store.heads):
            if head.meta.labels.get(REQUEST_LABEL) == ref:
                return head.id, False
        raise NotFoundError(
            f"nothing to branch from {ref!r}: not a snapshot id, the request_id of a checkpointed execution "
            "or a live persistent workspace",
            branch_from=ref,
        )

    async def _branched(self, req: SeedExecuteRequest, ref: str, request_id: str) -> dict[str, Any]:
        instances = self._instances()
        snap_id, temporary = await self._source_snapshot(ref)
        try:
            start = InstanceSpec(
                snapshot_id=snap_id, memory_mb=req.memory_mb, cpu_cores=req.cpu_cores
            )
            inst = await instances.create(start)
            try:
                res = await instances.exec(inst.id, self._exec_request(req))
            finally:
                await instances.delete(inst.id)
        finally:
            if temporary:
                assert self.snapshots is not None
                with contextlib.suppress(FaasdError):
                    await self.snapshots.delete(snap_id, force=True)
        answer = self._answer(req, request_id, "branched", "runc", res, start="restore")
        answer["branch_from"] = ref
        answer["source_snapshot"] = None if temporary else snap_id
        return answer

    def _workspace(self, ref: str, *, required: bool = True) -> _Workspace | None:
        ws = self.workspaces.get(ref)
        if ws is None and required:
            raise NotFoundError(
                f"workspace {ref!r} does not exist (expired after its TTL, or never created); start one "
                "with a persistent execution without 'workspace'",
                workspace=ref,
            )
        return ws

    async def _persistent(self, req: SeedExecuteRequest, request_id: str) -> dict[str, Any]:
        instances = self._instances()
        if req.workspace is not None:
            name = req.workspace
            ws = self._workspace(name)
            assert ws is not None
            if req.ttl_s is not None:
                ws.ttl_s = req.ttl_s
            start_kind = "warm"
        else:
            name = request_id
            await self.resolve_image(req.image_ref())
            inst = await instances.create(
                InstanceSpec(
                    image=req.image_ref(),
                    name=WORKSPACE_PREFIX + request_id,
                    memory_mb=req.memory_mb,
                    cpu_cores=req.cpu_cores,
                )
            )
            ws = self.workspaces[name] = _Workspace(
                inst.id, req.ttl_s or DEFAULT_WORKSPACE_TTL_S, time.monotonic()
            )
            self._ensure_reaper()
            start_kind = "cold"
        ws.last_used = time.monotonic()
        try:
            res = await instances.exec(ws.instance_id, self._exec_request(req))
        finally:
            ws.last_used = time.monotonic()
        answer = self._answer(req, request_id, "persistent", "runc", res, start=start_kind)
        answer["workspace"] = {"id": name, "instance_id": ws.instance_id, "ttl_s": ws.ttl_s}
        return answer

    # -- workspace TTL ------------------------------------------------------------------------
    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def _reap_loop(self) -> None:
        while self.workspaces:
            await asyncio.sleep(1.0)
            await self.reap_workspaces()

    async def reap_workspaces(self) -> builtins.list[str]:
        """Delete workspaces idle for longer than their TTL; returns their names."""
        now = time.monotonic()
        gone = [n for n, ws in self.workspaces.items() if now - ws.last_used > ws.ttl_s]
        for name in gone:
            ws = self.workspaces.pop(name)
            if self.instances is not None:
                with contextlib.suppress(FaasdError):
                    await self.instances.delete(ws.instance_id)
        return gone

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
        for name in list(self.workspaces):
            ws = self.workspaces.pop(name)
            if self.instances is not None:
                with contextlib.suppress(FaasdError):
                    await self.instances.delete(ws.instance_id)
        if self.pool is not None:
            await self.pool.close()

    # -- answers ------------------------------------------------------------------------------
    def _answer(
        self,
        req: SeedExecuteRequest,
        request_id: str,
        mode: str,
        runtime: str,
        res: dict[str, Any],
        *,
        start: str | None,
        sandbox_id: str | None = None,
    ) -> dict[str, Any]:
        code = int(res["exit_code"])
        error = None
        if res.get("timed_out"):
            error = f"timed out after {req.timeout_ms} ms (timeout_ms)"
        elif res.get("oom_killed"):
            error = f"killed: out of memory (memory_mb={req.memory_mb})"
        elif code != 0:
            error = f"Process exited with code {code}"
        return {
            "request_id": request_id,
            "exit_code": code,
            "stdout": res["stdout"],
            "stderr": res["stderr"],
            "duration_ms": res["duration_ms"],
            "output": res["stdout"],
            "logs": res["stderr"],
            "error": error,
            "mode": mode,
            "runtime": runtime,
            "image": None if mode == "branched" or req.snapshot_id or req.workspace else req.image_ref(),
            "cache_hit": False,
            "start": start,
            "timed_out": bool(res.get("timed_out")),
            "oom_killed": bool(res.get("oom_killed")),
            "stdout_truncated": bool(res.get("stdout_truncated")),
            "stderr_truncated": bool(res.get("stderr_truncated")),
            "isolation": "gvisor" if runtime == "runsc" else "runc",
            "snapshot": None,
            "workspace": None,
            "branch_from": None,
        }

    def _remember(self, answer: dict[str, Any]) -> None:
        self.records[answer["request_id"]] = answer
        while len(self.records) > MAX_RECORDS:
            self.records.popitem(last=False)
