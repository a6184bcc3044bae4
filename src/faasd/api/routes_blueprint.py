"""The seed platform's blueprint routes: zip deploy, invoke with ``{job_id, args}``, health, warm."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from faasd.api.auth import require
from faasd.api.invoke import read_body
from faasd.api.namespacing import target_namespace
from faasd.api.openapi_docs import EMPTY
from faasd.errors import InvalidInputError, NotFoundError
from faasd.platform.blueprint import BLUEPRINT_LABEL, BOOTSTRAP, parse_config, payload_bytes, zip_to_targz
from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec, LimitsModel, ScaleModel, check_name, display_name
from faasd.platform.invocation import Invocation
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import function_id as ns_function_id
from faasd.platform.source_deploy import SOURCE_DEST, build_source_image
from faasd.state import Function

router = APIRouter(prefix="/api/blueprint/functions", tags=["blueprint"])
invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))
BASE_IMAGE = "faasd/python:latest"
WARM_TIMEOUT_S = 120.0
ZIP_BODY = {
    "description": "the zip archive's bytes (any Content-Type; it must hold an executable 'bootstrap')",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


class BlueprintInvoke(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    job_id: int | str | None = None
    args: Any = None


def _p(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def _fid(request: Request, key: KeyInfo, function_id: str) -> str:
    """The id of blueprint function ``function_id`` in the request's namespace (the key's, or
    ``?namespace=``, else the default one)."""
    return ns_function_id(function_id, target_namespace(request, key))


def _function(p: Platform, function_id: str) -> Function:
    fn = p.functions.get(function_id)
    if (fn.labels or {}).get(BLUEPRINT_LABEL) != "true":
        raise NotFoundError(
            f"{function_id!r} is not a blueprint function (it was not deployed with a zip)",
            function=function_id,
        )
    return fn


def _view(p: Platform, fn: Function) -> dict[str, Any]:
    return {
        "function_id": display_name(fn),
        "namespace": fn.namespace,
        "image": fn.image,
        "memory_mb": fn.memory_mb,
        "timeout_secs": fn.timeout_s,
        "max_concurrency": fn.scale_max,
        "env_vars": dict(fn.env),
        "status": p.runner.status(fn),
    }


@router.put(
    "/{function_id}",
    openapi_extra={"requestBody": {"required": True, **ZIP_BODY}},
    responses={201: {"description": "Deployed"}},
)
async def deploy(function_id: str, request: Request, key: KeyInfo = deploy_scope) -> JSONResponse:
    """Deploy (or replace) a function from a zip holding an executable ``bootstrap``; settings in the
    header ``X-Blueprint-Config`` (base64 JSON ``{memory_mb, timeout_secs, max_concurrency, env_vars}``)."""
    p = _p(request)
    check_name(function_id)
    namespace = target_namespace(request, key)
    fid = ns_function_id(function_id, namespace)
    cfg = parse_config(request.headers.get("x-blueprint-config"))
    archive = await asyncio.to_thread(zip_to_targz, await read_body(request))
    store: Any = p.images
    if store is None or not hasattr(store, "add_layer"):
        raise InvalidInputError("this daemon has no image store for zip deploys")
    tmp_root = p.settings.data_dir / "tmp" / "source-deploy"
    ref = await asyncio.to_thread(build_source_image, store, fid, BASE_IMAGE, archive, tmp_root)
    spec = FunctionSpec(
        name=function_id,
        image=ref,
        runtime="exec",
        command=[f"{SOURCE_DEST}/{BOOTSTRAP}"],
        env=dict(cfg.env_vars),
        limits=LimitsModel(memory_mb=cfg.memory_mb, timeout_s=cfg.timeout_secs),
        scale=ScaleModel(min=0, max=cfg.max_concurrency),
        labels={BLUEPRINT_LABEL: "true"},
    )
    try:
        p.functions.get(fid)
    except NotFoundError:
        fn = await p.deploy(spec, namespace)
        return JSONResponse(_view(p, fn), status_code=201)
    _function(p, fid)  # only a blueprint function is replaced by a zip
    fn = await p.update(fid, spec)
    return JSONResponse(_view(p, fn), status_code=200)


@router.get("/{function_id}")
async def get(function_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = _p(request)
    return _view(p, _function(p, _fid(request, key, function_id)))


@router.delete("/{function_id}", status_code=204, responses={204: EMPTY})
async def delete(function_id: str, request: Request, key: KeyInfo = deploy_scope) -> Response:
    p = _p(request)
    fid = _fid(request, key, function_id)
    _function(p, fid)
    await p.delete(fid)
    return Response(status_code=204)


@router.post("/{function_id}/invoke")
async def invoke(
    function_id: str, body: BlueprintInvoke, request: Request, key: KeyInfo = invoke_scope
) -> dict[str, Any]:
    """Run ``bootstrap`` with ``args`` on stdin (text as is, byte values as bytes, else JSON)."""
    p = _p(request)
    fid = _fid(request, key, function_id)
    _function(p, fid)
    outcome = await p.executions.invoke(fid, Invocation(body=payload_bytes(body.args)))
    r = outcome
    return {
        "job_id": body.job_id,
        "execution_id": outcome.execution_id,
        "result": r.body.decode("utf-8", "replace"),
        "stdout": r.body.decode("utf-8", "replace"),
        "stderr": r.stderr.decode("utf-8", "replace"),
        "exit_code": r.exit_code if r.exit_code is not None else (0 if r.error is None else None),
        "error": r.error,
        "cold_start": outcome.cold,
        "duration_ms": round(outcome.init_ms + outcome.wait_ms + outcome.run_ms, 3),
    }


@router.get("/{function_id}/health")
async def health(function_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = _p(request)
    st = p.runner.status(_function(p, _fid(request, key, function_id)))
    return {"function_id": function_id, "status": "healthy", "warm": st["replicas"] - st["busy"], **st}


@router.post("/{function_id}/warm")
async def warm(function_id: str, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    """Start a worker now (if none is idle) and leave it warm for the function's idle TTL."""
    p = _p(request)
    fn = _function(p, _fid(request, key, function_id))
    handle = await p.runner.acquire(fn, WARM_TIMEOUT_S)
    await handle.release()
    st = p.runner.status(fn)
    return {"function_id": function_id, "started": handle.cold, "init_ms": round(handle.init_ms, 3), **st}
