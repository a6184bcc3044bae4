"""The seed platform's gateway routes, served alongside ``/api/v1``: health, execute (five modes), fork,
prewarm, pools, JSON metrics and the SSE log stream of an execution."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from faasd._version import __version__
from faasd.api.auth import require
from faasd.api.namespacing import require_unbound
from faasd.api.openapi_docs import ERRORS, SSE, errors
from faasd.api.routes_v1 import visible_execution
from faasd.platform.core import Platform
from faasd.platform.env import EnvVars, EnvVarsOrPairs
from faasd.platform.errors import UnavailableError
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import namespace_of_function_id, split_function_id
from faasd.platform.seed_execute import SeedExecuteService
from faasd.platform.seed_models import RuntimeName, SeedExecuteRequest, sandbox_runtime

router = APIRouter()
invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))
FINISHED = ("succeeded", "failed", "timeout")


def _p(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def _seed(request: Request) -> SeedExecuteService:
    seed = _p(request).seed
    if seed is None:
        raise UnavailableError(
            "one-off execution is not available: the daemon runs without an image store or sandbox manager"
        )
    return seed


# -- health -------------------------------------------------------------------------------------
def _binary(name: str) -> dict[str, Any]:
    path = shutil.which(name)
    return {"ok": path is not None, "path": path}


@router.get("/health", responses={503: ERRORS[503]}, tags=["seed"])
async def health(request: Request) -> JSONResponse:
    """Component checks: database, runc/runsc/criu binaries, image store, snapshot store."""
    p = _p(request)
    s = p.settings
    components: dict[str, dict[str, Any]] = {}
    try:
        await asyncio.to_thread(p.db.ping)
        components["database"] = {"ok": True}
    except Exception as exc:
        components["database"] = {"ok": False, "error": str(exc)[:500]}
    components["runc"] = _binary(s.runc_binary)
    components["runsc"] = _binary(s.runsc_binary)
    components["criu"] = _binary(s.criu_binary)
    components["image_store"] = {"ok": p.images is not None and s.images_dir.parent.is_dir()}
    components["snapshots"] = {"ok": p.snapshots is not None}
    essential = ("database", "runc", "image_store")
    healthy = all(components[c]["ok"] for c in essential)
    degraded = healthy and not all(c["ok"] for c in components.values())
    body = {
        "status": "healthy" if healthy and not degraded else ("degraded" if healthy else "unhealthy"),
        "runtime": "runc",
        "runtimes": {
            "docker": components["runc"]["ok"],
            "gvisor": components["runsc"]["ok"],
            "firecracker": False,
        },
        "docker": components["runc"]["ok"],
        "firecracker": False,
        "uptime_ms": round((time.time() - p.started_at) * 1000),
        "version": __version__,
        "components": components,
    }
    if not healthy:
        failed = [c for c in essential if not components[c]["ok"]]
        body["error"] = "unhealthy"
        body["message"] = f"faasd cannot run executions: {', '.join(failed)} not available"
    return JSONResponse(body, status_code=200 if healthy else 503)


# -- execute ------------------------------------------------------------------------------------
@router.post("/api/v1/execute", responses=errors(400, 401, 403, 404, 413, 422, 429, 503), tags=["seed"])
async def execute(body: SeedExecuteRequest, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    """Run a command once in one of the modes ephemeral, cached, checkpointed, branched, persistent.
    A namespaced key may run mode ``ephemeral`` only (the other modes keep state every namespace shares:
    the result cache, workspaces, execute snapshots)."""
    if body.effective_mode != "ephemeral" or body.snapshot_id or body.branch_from or body.workspace:
        require_unbound(key, f"execute mode {body.effective_mode!r}")
    return await _seed(request).execute(body)


class ForkRequest(BaseModel):
    """A command to run in a copy of an execution's (or snapshot's) state."""

    model_config = ConfigDict(extra="forbid", strict=True)
    command: list[str] | str | None = None
    code: str | None = Field(default=None, max_length=1024 * 1024)
    language: Literal["python", "node", "shell"] | None = None
    env_vars: EnvVarsOrPairs = Field(default_factory=dict)
    timeout_ms: int = Field(default=30000, ge=1, le=3_600_000)
    memory_mb: int = Field(default=256, ge=16, le=65536)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)
    working_dir: str | None = Field(default=None, max_length=4096)
    stdin: str | None = Field(default=None, max_length=4 * 1024 * 1024)
    runtime: RuntimeName | None = None

    def to_execute(self, branch_from: str) -> SeedExecuteRequest:
        data = self.model_dump(exclude_none=True)
        data.update(mode="branched", branch_from=branch_from)
        return SeedExecuteRequest.model_validate(data)


class ForkManyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    branch_from: str = Field(min_length=1, max_length=128)
    commands: list[list[str] | str] = Field(min_length=1, max_length=16)
    env_vars: EnvVars = Field(default_factory=dict)
    timeout_ms: int = Field(default=30000, ge=1, le=3_600_000)
    memory_mb: int = Field(default=256, ge=16, le=65536)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)
    working_dir: str | None = Field(default=None, max_length=4096)


@router.post(
    "/api/v1/executions/{execution_id}/fork",
    responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
    tags=["seed"],
)
async def fork_execution(
    execution_id: str, body: ForkRequest, request: Request, key: KeyInfo = deploy_scope
) -> dict[str, Any]:
    """Run a command in a copy of a checkpointed/persistent execution's state (or a snapshot's)."""
    require_unbound(key, "fork")
    return await _seed(request).execute(body.to_execute(execution_id))


@router.post("/api/v1/fork", responses=errors(400, 401, 403, 404, 413, 422, 429, 503), tags=["seed"])
async def fork_many(
    body: ForkManyRequest, request: Request, key: KeyInfo = deploy_scope
) -> list[dict[str, Any]]:
    """Each command in its own copy of ``branch_from``; the answers in the order of ``commands``."""
    require_unbound(key, "fork")
    common = body.model_dump(exclude={"branch_from", "commands"}, exclude_none=True)
    reqs = [
        SeedExecuteRequest.model_validate(
            {**common, "command": c, "mode": "branched", "branch_from": body.branch_from}
        )
        for c in body.commands
    ]
    return await _seed(request).fork_many(body.branch_from, reqs)


# -- prewarm / pools ----------------------------------------------------------------------------
class PrewarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    image: str = Field(min_length=1, max_length=512)
    count: int = Field(default=1, ge=0, le=16)
    runtime: RuntimeName | None = None
    memory_mb: int = Field(default=256, ge=16, le=65536)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)


@router.post("/api/v1/prewarm", responses=errors(400, 401, 403, 404, 413, 422, 429, 503), tags=["seed"])
async def prewarm(body: PrewarmRequest, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    """Start ``count`` warm execute sandboxes of ``image`` (waits until they run)."""
    require_unbound(key, "prewarm (warm execute sandboxes)")
    seed = _seed(request)
    if seed.pool is None:
        raise UnavailableError("warm execute sandboxes need real sandboxes; this daemon runs without them")
    return await seed.pool.prewarm(
        body.image, body.count, sandbox_runtime(body.runtime), body.memory_mb, body.cpu_cores
    )


@router.get("/api/v1/pools", responses=errors(401, 403, 429), tags=["seed"])
async def pools(request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    """Warm execute sandboxes per image, and the warm workers of every function (a namespaced key: of
    its namespace's functions, and no execute sandboxes)."""
    p = _p(request)
    seed = p.seed
    functions = []
    for fid, pool in list(p.runner.pools.items()):
        if not key.access.sees(namespace_of_function_id(fid)):
            continue
        st = pool.stats()
        name, namespace = split_function_id(fid)
        functions.append({"function": name, "namespace": namespace, "busy": st.busy, "idle": st.idle})
    execute = seed.pool.list() if seed and seed.pool and key.namespace is None else []
    return {"execute": execute, "functions": functions}


# -- metrics ------------------------------------------------------------------------------------
@router.get("/api/v1/metrics", responses=errors(401, 403, 429), tags=["seed"])
async def metrics(request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    """Counts and rates of real executions of this daemon since it started."""
    p = _p(request)
    seed = p.seed
    body: dict[str, Any] = seed.metrics.summary() if seed else {"total_requests": 0}
    body["active_instances"] = len(p.instances.list()) if p.instances is not None else 0
    body["warm_sandboxes"] = seed.pool.warm_count() if seed and seed.pool else 0
    return body


@router.get("/api/v1/metrics/detailed", responses=errors(401, 403, 429), tags=["seed"])
async def metrics_detailed(request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    """Summary, per-mode and per-runtime counts, the result cache and latency percentiles (null until
    there are samples). ``*_start_ms`` are end-to-end latencies of executions that started cold (a new
    sandbox) or warm (a pooled one)."""
    p = _p(request)
    seed = _seed(request)
    m = seed.metrics
    return {
        "summary": m.summary(),
        "modes": dict(m.by_mode),
        "runtimes": {
            "docker": {
                "executions": m.by_runtime.get("runc", 0),
                "available": shutil.which(p.settings.runc_binary) is not None,
            },
            "gvisor": {
                "executions": m.by_runtime.get("runsc", 0),
                "available": shutil.which(p.settings.runsc_binary) is not None,
            },
            "firecracker": {"executions": 0, "available": False},
        },
        "performance": m.performance(),
        "cache": seed.cache.stats(),
        "pools": seed.pool.list() if seed.pool else [],
        "workspaces": len(seed.workspaces),
    }


# -- logs ---------------------------------------------------------------------------------------
@router.get(
    "/api/v1/logs/{execution_id}/stream",
    responses={200: SSE, **errors(401, 403, 404, 429)},
    response_class=EventSourceResponse,
    tags=["seed"],
)
async def stream_logs(
    execution_id: str, request: Request, key: KeyInfo = invoke_scope
) -> EventSourceResponse:
    """SSE of an execution's output: ``stdout``/``stderr`` events (one per line), then ``exit``. For a
    function execution still queued or running, lines are sent as they are recorded until it finishes;
    for an execute request (``rq_...``) its output is replayed."""
    p = _p(request)
    if execution_id.startswith("rq_"):
        require_unbound(key, "the output of execute requests")
        rec = _seed(request).record(execution_id)

        async def replay() -> AsyncIterator[dict[str, str]]:
            for stream in ("stdout", "stderr"):
                for line in rec[stream].splitlines():
                    yield {"event": stream, "data": line}
            yield {
                "event": "exit",
                "data": json.dumps({"exit_code": rec["exit_code"], "error": rec["error"]}),
            }

        return EventSourceResponse(replay())
    ex = visible_execution(request, key, execution_id)
    follower = p.logs.follow(ex.function) if ex.status not in FINISHED else None
    history = p.logs.for_execution(execution_id)
    if follower is not None:
        follower.skip([e.id for e in history])

    async def events() -> AsyncIterator[dict[str, str]]:
        sent: set[int | None] = set()
        try:
            for e in history:
                sent.add(e.id)
                yield {"event": e.stream, "data": e.text}
            while follower is not None:
                line = await follower.get(timeout=0.5)
                if line is not None:
                    if line.execution_id == execution_id and line.id not in sent:
                        sent.add(line.id)
                        yield {"event": line.stream, "data": line.text}
                    continue
                if p.executions.get(execution_id).status in FINISHED:
                    for e in p.logs.for_execution(execution_id):  # lines stored as it finished
                        if e.id not in sent:
                            sent.add(e.id)
                            yield {"event": e.stream, "data": e.text}
                    break
                if await request.is_disconnected():
                    return
            done = p.executions.get(execution_id)
            yield {
                "event": "exit",
                "data": json.dumps({"status": done.status, "exit_code": done.exit_code, "error": done.error}),
            }
        finally:
            if follower is not None:
                follower.close()

    return EventSourceResponse(events())
