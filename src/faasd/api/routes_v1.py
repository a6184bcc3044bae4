"""Native API ``/api/v1``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from faasd._version import __version__
from faasd.api.auth import require
from faasd.api.errors import loads_json
from faasd.api.invoke import function_response, invocation_from, read_body
from faasd.api.namespacing import list_namespace, require_visible, target_namespace
from faasd.errors import ConflictError, FaasdError, InvalidInputError, NotFoundError
from faasd.platform.core import Platform
from faasd.platform.executions import Outcome, StreamStart, encode_body, execution_dict
from faasd.platform.functions import MODES, RUNTIMES, FunctionSpec
from faasd.platform.invocation import StreamChunk
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import (
    DEFAULT_NAMESPACE,
    function_id,
    namespace_of_function_id,
    split_function_id,
)
from faasd.platform.secrets import display_name as secret_display_name
from faasd.platform.source_deploy import build_source_image, default_base_image, source_ref
from faasd.state.models import INT_COLUMN_MAX, iso

router = APIRouter(prefix="/api/v1")

invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))
admin_scope = Depends(require("admin"))


def platform_of(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    min: int | None = Field(default=None, ge=0, le=100)
    max: int | None = Field(default=None, ge=1, le=100)
    replicas: int | None = Field(default=None, ge=0, le=100)


class SecretCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=253)
    value: str
    namespace: str | None = Field(default=None, min_length=1, max_length=63)


class SecretUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    value: str


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(min_length=1)
    rate_limit_rps: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1, le=INT_COLUMN_MAX)
    namespace: str | None = Field(default=None, min_length=1, max_length=63)


async def _json_body(request: Request) -> Any:
    from faasd.api.invoke import read_body

    return loads_json(await read_body(request))


@router.get("/info")
async def info(request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = platform_of(request)
    return {
        "version": __version__,
        "auth": p.settings.auth,
        "max_payload_bytes": p.settings.max_payload_bytes,
        "runtimes": list(RUNTIMES),
        "modes": list(MODES),
        "execute": p.execute is not None,
        "source_deploy": _source_store(p) is not None,
        "isolation": p.settings.isolation,
        "isolations": ["runc", "gvisor"] if shutil.which(p.settings.runsc_binary) else ["runc"],
    }


# -- functions ----------------------------------------------------------------------------------
@router.get("/functions")
async def list_functions(request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = platform_of(request)
    return {"functions": [p.view(fn) for fn in p.functions.list(list_namespace(request, key))]}


def _fid(request: Request, key: KeyInfo, name: str) -> str:
    """The id of function ``name`` in the namespace the request acts in."""
    return function_id(name, target_namespace(request, key))


# Source deploy: create/update also take multipart/form-data with a `function` part (the Function JSON,
# `image` optional: the runtime's base image) and a `source` part (tar.gz of the code directory).
def _source_store(p: Platform) -> Any | None:
    images = p.images
    return images if images is not None and hasattr(images, "add_layer") else None


async def _multipart_function(request: Request) -> tuple[Any, bytes]:
    body = await read_body(request)  # bounded by max_payload_bytes

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, chunks(), max_files=2, max_fields=2)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidInputError(f"malformed multipart body: {exc.message}") from None
    try:
        parts: dict[str, bytes] = {}
        for key, value in form.multi_items():
            if key not in ("function", "source") or key in parts:
                raise InvalidInputError(
                    f"unexpected multipart part {key!r}: send exactly one 'function' (JSON) and one "
                    "'source' (tar.gz of the function's directory)"
                )
            parts[key] = await value.read() if isinstance(value, UploadFile) else value.encode()
    finally:
        await form.close()
    if "function" not in parts or "source" not in parts:
        raise InvalidInputError("a source deploy needs a 'function' part (JSON) and a 'source' part (tar.gz)")
    data = loads_json(parts["function"], "the 'function' part")
    if isinstance(data, dict) and not data.get("image"):
        runtime = data.get("runtime")
        data["image"] = default_base_image(runtime if isinstance(runtime, str) else None)
    return data, parts["source"]


async def _function_request(request: Request, name: str | None = None) -> tuple[FunctionSpec, bytes | None]:
    """The FunctionSpec of a create/update request (JSON, or multipart with a source archive)."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        data, archive = await _multipart_function(request)
    else:
        data, archive = await _json_body(request), None
    if name is not None and isinstance(data, dict):
        data.setdefault("name", name)
    return FunctionSpec.model_validate(data), archive


async def _with_source_image(
    p: Platform, spec: FunctionSpec, archive: bytes
) -> tuple[FunctionSpec, str | None]:
    """Build the source layer on ``spec.image``; returns the spec using it, and the ref if it is new."""
    store = _source_store(p)
    if store is None:
        raise InvalidInputError("this daemon has no image store for source deploys; deploy an image instead")
    fid = function_id(spec.name, spec.namespace or DEFAULT_NAMESPACE)
    ref = source_ref(fid, archive)
    existed = bool(getattr(store, "exists", lambda _r: True)(ref))
    tmp_root = p.settings.data_dir / "tmp" / "source-deploy"
    built = await asyncio.to_thread(build_source_image, store, fid, spec.image, archive, tmp_root)
    return spec.model_copy(update={"image": built}), (None if existed else built)


def _exists(p: Platform, name: str) -> bool:
    try:
        p.functions.get(name)
    except NotFoundError:
        return False
    return True


def _drop_image(p: Platform, ref: str | None) -> None:
    store = _source_store(p)
    if ref is not None and store is not None:
        with contextlib.suppress(Exception):
            store.remove(ref)


@router.post("/functions", status_code=201)
async def create_function(request: Request, key: KeyInfo = deploy_scope) -> JSONResponse:
    p = platform_of(request)
    spec, archive = await _function_request(request)
    namespace = target_namespace(request, key, spec.namespace)
    spec.namespace = namespace
    new_ref = None
    if archive is not None:
        if _exists(p, function_id(spec.name, namespace)):  # 409 before building anything
            raise ConflictError(
                f"function {spec.name!r} already exists; update it with PUT", function=spec.name
            )
        spec, new_ref = await _with_source_image(p, spec, archive)
    try:
        fn = await p.deploy(spec, namespace)
    except BaseException:
        _drop_image(p, new_ref)
        raise
    return JSONResponse(p.view(fn), status_code=201)


@router.get("/functions/{name}")
async def get_function(name: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = platform_of(request)
    return p.view(p.functions.get(_fid(request, key, name)))


@router.put("/functions/{name}")
async def update_function(name: str, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    p = platform_of(request)
    spec, archive = await _function_request(request, name)
    namespace = target_namespace(request, key, spec.namespace)
    spec.namespace = namespace
    fid = function_id(name, namespace)
    new_ref = None
    if archive is not None:
        p.functions.get(fid)  # 404 before building anything
        spec, new_ref = await _with_source_image(p, spec, archive)
    try:
        fn = await p.update(fid, spec)
    except BaseException:
        _drop_image(p, new_ref)
        raise
    return p.view(fn)


@router.delete("/functions/{name}", status_code=204)
async def delete_function(name: str, request: Request, key: KeyInfo = deploy_scope) -> Response:
    await platform_of(request).delete(_fid(request, key, name))
    return Response(status_code=204)


@router.post("/functions/{name}/scale")
async def scale_function(
    name: str, body: ScaleRequest, request: Request, key: KeyInfo = deploy_scope
) -> dict[str, Any]:
    p = platform_of(request)
    if body.min is None and body.max is None and body.replicas is None:
        raise InvalidInputError("give at least one of 'min', 'max' or 'replicas'")
    fn = await p.scale(_fid(request, key, name), min=body.min, max=body.max, replicas=body.replicas)
    st = p.runner.status(fn)
    return {
        "name": name,
        "namespace": fn.namespace,
        "min": fn.scale_min,
        "max": fn.scale_max,
        "replicas": st["replicas"],
    }


@router.get("/functions/{name}/logs")
async def function_logs(
    name: str,
    request: Request,
    tail: int = Query(100, ge=0, le=100000),
    since: datetime | None = None,
    key: KeyInfo = deploy_scope,
) -> dict[str, Any]:
    p = platform_of(request)
    fid = _fid(request, key, name)
    p.functions.get(fid)
    lines = [{**e.to_dict(), "function": name} for e in p.logs.query(fid, tail=tail, since=since)]
    return {"lines": lines}


# -- invocation ---------------------------------------------------------------------------------
def _accepted(execution_id: str) -> JSONResponse:
    return JSONResponse(
        {
            "execution_id": execution_id,
            "status": "queued",
            "status_url": f"/api/v1/executions/{execution_id}",
        },
        status_code=202,
        headers={"X-Execution-Id": execution_id, "X-Call-Id": execution_id},
    )


async def _submit(fid: str, request: Request, callback_url: str | None) -> JSONResponse:
    p = platform_of(request)
    inv = await invocation_from(request)
    cb = callback_url or request.headers.get("x-callback-url") or None
    ex = p.executions.submit(fid, inv, callback_url=cb)
    return _accepted(ex.id)


@router.post("/functions/{name}/invoke")
async def invoke(
    name: str,
    request: Request,
    async_: bool = Query(False, alias="async"),
    callback_url: str | None = None,
    key: KeyInfo = invoke_scope,
) -> Response:
    fid = _fid(request, key, name)
    if async_:
        return await _submit(fid, request, callback_url)
    p = platform_of(request)
    inv = await invocation_from(request)
    outcome = await p.executions.invoke(fid, inv)
    return function_response(outcome)


@router.post("/functions/{name}/invoke-async")
async def invoke_async(
    name: str, request: Request, callback_url: str | None = None, key: KeyInfo = invoke_scope
) -> Response:
    return await _submit(_fid(request, key, name), request, callback_url)


def _outcome_event(o: Outcome) -> dict[str, Any]:
    body, enc = encode_body(o.body)
    return {
        "execution_id": o.execution_id,
        "status": o.status,
        "http_status": o.http_status,
        "headers": dict(o.headers),
        "body": body,
        "body_encoding": enc,
        "error": o.error,
        "error_code": o.error_code,
        "exit_code": o.exit_code,
        "duration_ms": round(o.duration_ms, 3),
    }


@router.post("/functions/{name}/invoke-stream")
async def invoke_stream(name: str, request: Request, key: KeyInfo = invoke_scope) -> EventSourceResponse:
    p = platform_of(request)
    fid = _fid(request, key, name)
    inv = await invocation_from(request)
    session = await p.executions.open_stream(fid, inv)

    async def events() -> Any:
        try:
            async for ev in session.events():
                if isinstance(ev, StreamStart):
                    yield {
                        "event": "start",
                        "data": json.dumps({"execution_id": ev.execution_id, "cold_start": ev.cold}),
                    }
                elif isinstance(ev, StreamChunk):
                    yield {"event": ev.stream, "data": ev.data.decode("utf-8", "replace")}
                else:
                    yield {"event": "result", "data": json.dumps(_outcome_event(ev))}
        except FaasdError as exc:
            yield {"event": "error", "data": json.dumps(exc.to_dict(), default=str)}

    return EventSourceResponse(events(), headers={"X-Execution-Id": session.execution_id})


# -- executions ---------------------------------------------------------------------------------
def execution_view(ex: Any) -> dict[str, Any]:
    """An execution as the API shows it: the function's name and namespace (its record holds the id)."""
    name, namespace = split_function_id(ex.function)
    return {**execution_dict(ex), "function": name, "namespace": namespace}


def visible_execution(request: Request, key: KeyInfo, execution_id: str) -> Any:
    """Execution ``execution_id`` if the key may see it; 404 (as for an absent one) otherwise."""
    p = platform_of(request)
    missing = NotFoundError(f"execution {execution_id!r} does not exist", id=execution_id)
    try:
        ex = p.executions.get(execution_id)
    except NotFoundError:
        raise missing from None
    require_visible(key, namespace_of_function_id(ex.function), missing)
    return ex


@router.get("/executions")
async def list_executions(
    request: Request,
    function: str | None = None,
    status: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    key: KeyInfo = invoke_scope,
) -> dict[str, Any]:
    p = platform_of(request)
    namespace = list_namespace(request, key)
    if function is not None:  # a function is named within the namespace the request acts in
        fid = function_id(function, namespace or target_namespace(request, key))
        rows = p.executions.list(fid, status, limit)
    else:
        rows = p.tenancy.executions(namespace, status, limit)
    return {"executions": [execution_view(e) for e in rows]}


@router.get("/executions/{execution_id}")
async def get_execution(execution_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    return execution_view(visible_execution(request, key, execution_id))


@router.get("/executions/{execution_id}/logs")
async def execution_logs(execution_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    ex = visible_execution(request, key, execution_id)
    return {"execution_id": ex.id, "stdout": ex.stdout, "stderr": ex.stderr}


# -- secrets ------------------------------------------------------------------------------------
def _secret_view(s: Any) -> dict[str, Any]:
    return {
        "name": secret_display_name(s),
        "namespace": s.namespace,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


@router.get("/secrets")
async def list_secrets(request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    secrets = platform_of(request).secrets.list(list_namespace(request, key))
    return {"secrets": [_secret_view(s) for s in secrets]}


@router.post("/secrets", status_code=201)
async def create_secret(body: SecretCreate, request: Request, key: KeyInfo = deploy_scope) -> JSONResponse:
    namespace = target_namespace(request, key, body.namespace)
    sec = platform_of(request).secrets.create(body.name, body.value.encode(), namespace)
    return JSONResponse(_secret_view(sec), status_code=201)


@router.put("/secrets/{name}")
async def update_secret(
    name: str, body: SecretUpdate, request: Request, key: KeyInfo = deploy_scope
) -> dict[str, Any]:
    namespace = target_namespace(request, key)
    return _secret_view(platform_of(request).secrets.update(name, body.value.encode(), namespace))


@router.delete("/secrets/{name}", status_code=204)
async def delete_secret(name: str, request: Request, key: KeyInfo = deploy_scope) -> Response:
    platform_of(request).secrets.delete(name, target_namespace(request, key))
    return Response(status_code=204)


# -- API keys -----------------------------------------------------------------------------------
def _key_view(k: Any) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "scopes": list(k.scopes),
        "rate_limit_rps": k.rate_limit_rps,
        "burst": k.burst,
        "namespace": k.namespace,
        "created_at": iso(k.created_at),
        "last_used_at": iso(k.last_used_at),
    }


@router.get("/keys")
async def list_keys(request: Request, _k: KeyInfo = admin_scope) -> dict[str, Any]:
    return {"keys": [_key_view(k) for k in platform_of(request).keys.list()]}


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, request: Request, _k: KeyInfo = admin_scope) -> JSONResponse:
    row, token = platform_of(request).keys.create(
        body.name, body.scopes, body.rate_limit_rps, body.burst, namespace=body.namespace
    )
    return JSONResponse({**_key_view(row), "key": token}, status_code=201)


@router.delete("/keys/{key_id}", status_code=204)
async def delete_key(key_id: str, request: Request, _k: KeyInfo = admin_scope) -> Response:
    p = platform_of(request)
    p.keys.delete(key_id)
    p.rate_limiter.forget(key_id)
    return Response(status_code=204)
