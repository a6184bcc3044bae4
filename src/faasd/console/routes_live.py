"""Live views over server-sent events: platform state (pools, executions, instances, queue), a
function's logs, a long operation's progress; and the metrics history behind the charts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from sse_starlette import EventSourceResponse

from faasd.console.deps import console_of, deploy_scope, invoke_scope, platform_of
from faasd.platform.core import Platform
from faasd.platform.executions import execution_dict
from faasd.platform.instances import instance_dict
from faasd.platform.keys import KeyInfo

router = APIRouter(prefix="/ui/api")

EVENT_PERIOD_S = 1.0


def pools_state(p: Platform) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fn in p.functions.list():
        out[fn.name] = {**p.runner.status(fn), "invocations": fn.invocation_count, "mode": fn.mode}
    return out


def queue_depth(p: Platform) -> dict[str, Any]:
    per_pool = {name: pool.stats().queued for name, pool in list(p.runner.pools.items()) if not pool.closed}
    queued = sum(s.value for fam in p.metrics.queued.collect() for s in fam.samples)
    return {"async_queued": queued, "pools": per_pool}


def _recent(p: Platform) -> list[dict[str, Any]]:
    keep = ("id", "function", "status", "http_status", "cold_start", "run_ms", "created_at", "finished_at")
    return [{k: d[k] for k in keep} for d in map(execution_dict, p.executions.list(None, None, 25))]


def _instances(p: Platform) -> list[dict[str, Any]]:
    if p.instances is None:
        return []
    return [instance_dict(i) for i in p.instances.list()]


def state_events(p: Platform) -> dict[str, Any]:
    return {
        "pools": pools_state(p),
        "executions": _recent(p),
        "instances": _instances(p),
        "queue": queue_depth(p),
    }


@router.get("/events")
async def events(request: Request, _k: KeyInfo = invoke_scope) -> EventSourceResponse:
    """``pools``, ``executions``, ``instances`` and ``queue`` events, each sent when it changes."""
    p = platform_of(request)
    console_of(request)

    async def gen() -> AsyncIterator[dict[str, str]]:
        last: dict[str, str] = {}
        while True:
            for name, value in state_events(p).items():
                data = json.dumps(value, sort_keys=True, default=str)
                if last.get(name) != data:
                    last[name] = data
                    yield {"event": name, "data": data}
            await asyncio.sleep(EVENT_PERIOD_S)

    return EventSourceResponse(gen(), ping=15)


@router.get("/functions/{name}/logs/stream")
async def log_stream(
    name: str, request: Request, tail: int = Query(100, ge=0, le=10000), _k: KeyInfo = deploy_scope
) -> EventSourceResponse:
    """The last ``tail`` lines, then every new line as it is written (``log`` events)."""
    p = platform_of(request)
    p.functions.get(name)
    sub = p.logs.follow(name)  # before the history: no line falls in between
    history = p.logs.query(name, tail=tail)
    sub.skip([e.id for e in history])

    async def gen() -> AsyncIterator[dict[str, str]]:
        try:
            for e in history:
                yield {"event": "log", "data": json.dumps(e.to_dict())}
            yield {"event": "live", "data": "{}"}
            while True:
                entry = await sub.get(timeout=15)
                if entry is not None:
                    yield {"event": "log", "data": json.dumps(entry.to_dict())}
        finally:
            sub.close()

    return EventSourceResponse(gen(), ping=15)


@router.get("/operations/{op_id}/events")
async def operation_events(op_id: str, request: Request, _k: KeyInfo = invoke_scope) -> EventSourceResponse:
    op = console_of(request).operations.get(op_id)

    async def gen() -> AsyncIterator[dict[str, str]]:
        seen = -1
        while True:
            await op.wait_change(seen, 10.0)
            seen = op.version
            yield {"event": "progress", "data": json.dumps(op.to_dict(), default=str)}
            if op.status != "running":
                return

    return EventSourceResponse(gen(), ping=15)


@router.get("/operations/{op_id}")
async def operation(op_id: str, request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    return console_of(request).operations.get(op_id).to_dict()


@router.get("/metrics/history")
async def metrics_history(
    request: Request, function: str | None = Query(default=None, max_length=63), _k: KeyInfo = invoke_scope
) -> dict[str, Any]:
    """Per-interval invocations, errors, cold/warm starts and p50/p90/p99 latency (ms), sampled from the
    daemon's Prometheus counters every ``interval_s``; ``totals`` are the counters' current values."""
    return console_of(request).history.to_dict(function)
