"""Snapshots, restored sandboxes, branches and merges: ``/api/v1/snapshots``, ``/sandboxes``, ``/merges``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from faasd.api.auth import require
from faasd.api.invoke import RESPONSE_DROP, invocation_from
from faasd.api.namespacing import list_namespace, own_labels, target_namespace, visible_ref
from faasd.errors import NotFoundError
from faasd.platform.core import Platform
from faasd.platform.errors import UnavailableError
from faasd.platform.keys import KeyInfo
from faasd.platform.merges import MAX_BRANCHES, MergeService
from faasd.platform.namespaces import DEFAULT_NAMESPACE, function_id
from faasd.platform.snapshots import SnapshotService, missing_sandbox
from faasd.runtime.headers import relayable
from faasd.snapshots import SnapshotHead, SnapshotInfo
from faasd.snapshots.merge import STRATEGIES
from faasd.snapshots.seeds import SEED_MAX

router = APIRouter(prefix="/api/v1")

invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))


def service_of(request: Request) -> SnapshotService:
    p: Platform = request.app.state.platform
    svc = p.snapshots
    if svc is None:
        raise UnavailableError("this daemon runs without a sandbox runtime; snapshots are not available")
    return svc


class SnapshotCreate(BaseModel):
    """What to snapshot: a sandbox (a worker, a restored sandbox, or an instance's sandbox), an
    instance, or an idle worker of a function."""

    model_config = ConfigDict(extra="forbid", strict=True)
    sandbox_id: str | None = Field(default=None, min_length=1, max_length=128)
    instance_id: str | None = Field(default=None, min_length=1, max_length=40)
    function: str | None = Field(default=None, min_length=1, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)


class BranchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    count: int = Field(default=2, ge=1, le=64)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)


class MergeRequest(BaseModel):
    """Branches by snapshot id, by id of a restored sandbox / worker (``sandbox_ids``) or of an
    instance (``instance_ids``; ``sandbox_ids`` accepts instance ids and their sandbox ids too), or
    all kinds in one ordered list (``branches``). Order: ``branches``, then the other lists."""

    model_config = ConfigDict(extra="forbid", strict=True)
    branches: list[str] = Field(default_factory=list, max_length=MAX_BRANCHES)
    snapshot_ids: list[str] = Field(default_factory=list, max_length=MAX_BRANCHES)
    sandbox_ids: list[str] = Field(default_factory=list, max_length=MAX_BRANCHES)
    instance_ids: list[str] = Field(default_factory=list, max_length=MAX_BRANCHES)
    strategy: str = Field(default="fail", pattern="^(" + "|".join(STRATEGIES) + ")$")
    labels: dict[str, str] = Field(default_factory=dict)


# -- snapshots ----------------------------------------------------------------------------------
def snapshot_view(
    request: Request, svc: SnapshotService, snap: SnapshotInfo, heads: Sequence[SnapshotHead] | None = None
) -> dict[str, Any]:
    p: Platform = request.app.state.platform
    return {**svc.view(snap, heads), "namespace": p.tenancy.snapshot_namespace(snap)}


def sandbox_view(request: Request, entry: Any) -> dict[str, Any]:
    p: Platform = request.app.state.platform
    return {**entry.to_dict(), "namespace": p.tenancy.snapshot_namespace_of(entry.snapshot_id)}


@router.post("/snapshots", status_code=201)
async def create_snapshot(
    body: SnapshotCreate, request: Request, key: KeyInfo = deploy_scope
) -> JSONResponse:
    svc = service_of(request)
    p: Platform = request.app.state.platform
    ref = body.instance_id or body.sandbox_id
    function = body.function
    if ref is not None:
        namespace = visible_ref(request, key, ref, "instance" if body.instance_id else "sandbox")
    else:
        namespace = target_namespace(request, key)
        if function is not None:
            function = p.functions.get(function_id(function, namespace)).name  # 404 in its namespace
    labels = own_labels(body.labels, namespace)
    p.tenancy.check_new_snapshot(namespace)
    inst_id = p.instances.find(ref) if ref is not None and p.instances is not None else None
    if body.instance_id is not None and inst_id is None:
        raise NotFoundError(f"instance {body.instance_id!r} does not exist", instance=body.instance_id)
    if inst_id is not None:
        assert p.instances is not None
        snap = await p.instances.snapshot(inst_id, labels=labels)
    else:
        snap = await svc.create(
            sandbox_id=body.sandbox_id, function=function, labels=labels, timeout_s=body.timeout_s
        )
    return JSONResponse(snapshot_view(request, svc, snap), status_code=201)


@router.get("/snapshots")
async def list_snapshots(
    request: Request, function: str | None = Query(default=None), key: KeyInfo = invoke_scope
) -> dict[str, Any]:
    svc = service_of(request)
    p: Platform = request.app.state.platform
    namespace = list_namespace(request, key)
    heads = svc.list()
    snaps = p.tenancy.snapshots_of(namespace, heads)
    if function is not None:
        fid = function_id(function, namespace or target_namespace(request, key))
        of_function = {x.id for x in svc.list(fid)}  # once, not once per snapshot
        snaps = [s for s in snaps if s.id in of_function]
    return {"snapshots": [snapshot_view(request, svc, s, heads) for s in snaps]}


@router.post("/snapshots/gc")
async def gc_snapshots(request: Request, _k: KeyInfo = deploy_scope) -> dict[str, Any]:
    return asdict(await service_of(request).gc())


@router.get("/snapshots/{snapshot_id}")
async def get_snapshot(snapshot_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    svc = service_of(request)
    visible_ref(request, key, snapshot_id, "snapshot")
    return snapshot_view(request, svc, svc.get(snapshot_id))


@router.delete("/snapshots/{snapshot_id}", status_code=204)
async def delete_snapshot(
    snapshot_id: str, request: Request, force: bool = Query(default=False), key: KeyInfo = deploy_scope
) -> Response:
    svc = service_of(request)
    visible_ref(request, key, snapshot_id, "snapshot")
    await svc.delete(snapshot_id, force=force)
    return Response(status_code=204)


@router.post("/snapshots/{snapshot_id}/restore", status_code=201)
async def restore_snapshot(
    snapshot_id: str, request: Request, body: RestoreRequest | None = None, key: KeyInfo = deploy_scope
) -> JSONResponse:
    svc = service_of(request)
    p: Platform = request.app.state.platform
    visible_ref(request, key, snapshot_id, "snapshot")
    seed = body.seed if body is not None else None
    with p.tenancy.restore_start(snapshot_id):
        entry = await svc.restore(snapshot_id, seed=seed)
    return JSONResponse(sandbox_view(request, entry), status_code=201)


@router.post("/snapshots/{snapshot_id}/branch", status_code=201)
async def branch_snapshot(
    snapshot_id: str, body: BranchRequest, request: Request, key: KeyInfo = deploy_scope
) -> JSONResponse:
    svc = service_of(request)
    p: Platform = request.app.state.platform
    visible_ref(request, key, snapshot_id, "snapshot")
    with p.tenancy.restore_start(snapshot_id, body.count):
        entries = await svc.branch(snapshot_id, body.count, seed=body.seed)
    return JSONResponse({"sandboxes": [sandbox_view(request, e) for e in entries]}, status_code=201)


# -- merges -------------------------------------------------------------------------------------
@router.post("/merges")
async def merge(body: MergeRequest, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    svc = service_of(request)
    p: Platform = request.app.state.platform
    merges = MergeService(svc, p.instances)
    refs = [*body.branches, *body.snapshot_ids, *body.sandbox_ids, *body.instance_ids]
    owners = {visible_ref(request, key, r, "branch") for r in refs}
    namespace = owners.pop() if len(owners) == 1 else target_namespace(request, key)
    labels = own_labels(body.labels, namespace)
    p.tenancy.check_new_snapshot(namespace)
    result = await merges.merge(refs, strategy=body.strategy, labels=labels)
    return {
        "snapshot": snapshot_view(request, svc, result.snapshot),
        "report": result.report.to_dict(),
        "base": result.base,
        "branches": result.branches,
    }


# -- restored sandboxes -------------------------------------------------------------------------
@router.get("/sandboxes")
async def list_sandboxes(request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    svc = service_of(request)
    namespace = list_namespace(request, key)
    views = [sandbox_view(request, e) for e in list(svc.sandboxes.values())]
    return {"sandboxes": [v for v in views if namespace is None or v["namespace"] == namespace]}


def _restored(request: Request, key: KeyInfo, sandbox_id: str) -> Any:
    """A restored sandbox the key may see; else the same 404 as an absent one."""
    svc = service_of(request)
    p: Platform = request.app.state.platform
    entry = svc.sandbox(sandbox_id)
    if not key.access.sees(p.tenancy.snapshot_namespace_of(entry.snapshot_id) or DEFAULT_NAMESPACE):
        raise missing_sandbox(sandbox_id)
    return entry


@router.get("/sandboxes/{sandbox_id}")
async def get_sandbox(sandbox_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    return sandbox_view(request, _restored(request, key, sandbox_id))


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def delete_sandbox(sandbox_id: str, request: Request, key: KeyInfo = deploy_scope) -> Response:
    _restored(request, key, sandbox_id)
    await service_of(request).destroy(sandbox_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/invoke")
async def invoke_sandbox(sandbox_id: str, request: Request, key: KeyInfo = invoke_scope) -> Response:
    """The function's own response, like a function invoke (no execution record)."""
    svc = service_of(request)
    _restored(request, key, sandbox_id)
    result = await svc.invoke(sandbox_id, await invocation_from(request))
    headers = dict(relayable(result.headers.items(), RESPONSE_DROP))
    headers["X-Sandbox-Id"] = sandbox_id
    if result.error is not None:
        details: dict[str, Any] = {"sandbox_id": sandbox_id}
        if result.traceback:
            details["traceback"] = result.traceback[-8192:]
        if result.stderr:
            details["stderr"] = result.stderr[-8192:].decode("utf-8", "replace")
        if result.exit_code is not None:
            details["exit_code"] = result.exit_code
        headers.pop("content-type", None)
        return JSONResponse(
            {
                "error": "timeout" if result.timed_out else "function_error",
                "message": result.error,
                "details": details,
            },
            status_code=504 if result.timed_out else result.http_status if result.http_status >= 400 else 500,
            headers=headers,
        )
    return Response(result.body, status_code=result.http_status, headers=headers)
