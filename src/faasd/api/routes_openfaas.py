"""OpenFaaS gateway-compatible routes (``faas-cli`` works unchanged)."""

from __future__ import annotations

import base64
import binascii
import json
import platform as pyplatform
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from faasd._version import __version__
from faasd.api.auth import function_caller, require
from faasd.api.errors import loads_json
from faasd.api.invoke import function_response, invocation_from, read_body
from faasd.api.namespacing import target_namespace
from faasd.errors import InvalidInputError, NotFoundError
from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec, LimitsModel, ScaleModel, display_name
from faasd.platform.keys import KeyInfo
from faasd.platform.logs import LogEntry
from faasd.platform.namespaces import DEFAULT_NAMESPACE, function_id, parse_function_address
from faasd.platform.secrets import display_name as secret_display_name
from faasd.state import Function

router = APIRouter()
invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))
function_scope = Depends(function_caller)
NAMESPACE = DEFAULT_NAMESPACE


class FunctionDeployment(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    service: str
    image: str
    namespace: str | None = None
    envProcess: str | None = None
    envVars: dict[str, str] | None = None
    constraints: list[str] | None = None
    secrets: list[str] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None
    readOnlyRootFilesystem: bool = False


class ScaleServiceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    serviceName: str | None = None
    namespace: str | None = None
    replicas: int = Field(ge=0, le=100)


class DeleteFunctionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    functionName: str
    namespace: str | None = None


class SecretRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    namespace: str | None = None
    value: str | None = None
    rawValue: str | None = None

    def bytes_value(self) -> bytes:
        if self.rawValue is not None:
            try:
                return base64.b64decode(self.rawValue, validate=True)
            except binascii.Error:
                raise InvalidInputError("secret rawValue must be base64") from None
        if self.value is None:
            raise InvalidInputError("secret needs a 'value' (or base64 'rawValue')")
        return self.value.encode()


_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]|)?\s*[bB]?\s*$")
_MEM_UNITS = {
    "": 1 / (1024 * 1024),
    "K": 1000 / 1048576,
    "Ki": 1 / 1024,
    "M": 1e6 / 1048576,
    "Mi": 1.0,
    "G": 1e9 / 1048576,
    "Gi": 1024.0,
    "T": 1e12 / 1048576,
    "Ti": 1024.0 * 1024,
}


def parse_memory_mb(value: str) -> int:
    m = _MEM_RE.match(value)
    if not m:
        raise InvalidInputError(f"memory limit {value!r} is not understood; use e.g. '128Mi' or '1Gi'")
    unit = m.group(2) or ""
    unit = unit[0].upper() + unit[1:] if unit else ""
    return max(16, round(float(m.group(1)) * _MEM_UNITS[unit]))


def parse_cpu(value: str) -> float:
    v = value.strip()
    try:
        return float(v[:-1]) / 1000 if v.endswith("m") else float(v)
    except ValueError:
        raise InvalidInputError(f"cpu limit {value!r} is not understood; use e.g. '500m' or '0.5'") from None


def _int_label(meta: dict[str, str], key: str, default: int) -> int:
    raw = meta.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInputError(f"label {key}={raw!r} must be a whole number", label=key) from None


def deployment_to_spec(d: FunctionDeployment) -> FunctionSpec:
    labels = dict(d.labels or {})
    annotations = dict(d.annotations or {})
    meta = {**labels, **annotations}
    runtime = meta.get("faasd.runtime")
    command: list[str] | None = None
    if runtime is None:
        runtime = "exec" if d.envProcess else "http"
    if runtime == "exec":
        command = ["/bin/sh", "-c", d.envProcess] if d.envProcess else None
    elif runtime == "http" and d.envProcess:
        command = ["/bin/sh", "-c", d.envProcess]
    limits = LimitsModel()
    if d.limits and d.limits.get("memory"):
        limits.memory_mb = parse_memory_mb(d.limits["memory"])
    if d.limits and d.limits.get("cpu"):
        limits.cpu_cores = max(0.05, parse_cpu(d.limits["cpu"]))
    scale = ScaleModel(
        min=_int_label(meta, "com.openfaas.scale.min", 0),
        max=_int_label(meta, "com.openfaas.scale.max", 4),
    )
    return FunctionSpec(
        name=d.service,
        image=d.image,
        runtime=runtime,  # type: ignore[arg-type]
        handler=meta.get("faasd.handler"),
        command=command,
        port=_int_label(meta, "faasd.port", 0) or None,
        env=dict(d.envVars or {}),
        secrets=list(d.secrets or []),
        limits=limits,
        scale=scale,
        mode=meta.get("faasd.mode", "cached"),
        labels=labels,
        annotations=annotations,
    )


def function_status(p: Platform, fn: Function) -> dict[str, Any]:
    st = p.runner.status(fn)
    env_process = None
    if fn.runtime == "exec" and fn.command and fn.command[:2] == ["/bin/sh", "-c"]:
        env_process = fn.command[2]
    return {
        "name": display_name(fn),
        "image": fn.image,
        "namespace": fn.namespace,
        "envProcess": env_process,
        "envVars": dict(fn.env),
        "labels": dict(fn.labels),
        "annotations": dict(fn.annotations or {}),
        "secrets": list(fn.secrets),
        "limits": {"memory": f"{fn.memory_mb}Mi", "cpu": f"{round(fn.cpu_cores * 1000)}m"},
        "requests": None,
        "constraints": [],
        "readOnlyRootFilesystem": False,
        "replicas": st["replicas"],
        "availableReplicas": st["replicas"],
        "invocationCount": float(fn.invocation_count or 0),
        "createdAt": fn.created_at.isoformat().replace("+00:00", "Z"),
    }


def _p(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


async def _json(request: Request, model: type[BaseModel]) -> Any:
    return model.model_validate(loads_json(await read_body(request)))


@router.get("/system/info")
async def system_info(_k: KeyInfo = invoke_scope) -> dict[str, Any]:
    return {
        "provider": {
            "provider": "faasd",
            "orchestration": "runc",
            "version": {"sha": "", "release": __version__},
        },
        "version": {"release": __version__, "sha": "", "commit_message": ""},
        "arch": pyplatform.machine(),
    }


@router.get("/system/namespaces")
async def system_namespaces(request: Request, key: KeyInfo = invoke_scope) -> list[str]:
    """The namespaces the key may act in (a namespaced key: its own; else every one)."""
    if key.namespace is not None:
        return [key.namespace]
    return [ns.name for ns in _p(request).namespaces.list()]


# As the OpenFaaS gateway: a request naming no namespace (`?namespace=`, or `namespace` in the body)
# acts in the key's namespace, else in the default one (lists too: never every namespace at once).
@router.get("/system/functions")
async def system_functions(request: Request, key: KeyInfo = invoke_scope) -> list[dict[str, Any]]:
    p = _p(request)
    return [function_status(p, fn) for fn in p.functions.list(target_namespace(request, key))]


@router.post("/system/functions")
async def system_deploy(request: Request, key: KeyInfo = deploy_scope) -> Response:
    d: FunctionDeployment = await _json(request, FunctionDeployment)
    namespace = target_namespace(request, key, d.namespace or None)
    await _p(request).deploy(deployment_to_spec(d), namespace)
    return Response(status_code=202)


@router.put("/system/functions")
async def system_update(request: Request, key: KeyInfo = deploy_scope) -> Response:
    d: FunctionDeployment = await _json(request, FunctionDeployment)
    namespace = target_namespace(request, key, d.namespace or None)
    await _p(request).update(function_id(d.service, namespace), deployment_to_spec(d))
    return Response(status_code=202)


@router.delete("/system/functions")
async def system_delete(request: Request, key: KeyInfo = deploy_scope) -> Response:
    d: DeleteFunctionRequest = await _json(request, DeleteFunctionRequest)
    namespace = target_namespace(request, key, d.namespace or None)
    await _p(request).delete(function_id(d.functionName, namespace))
    return Response(status_code=202)


@router.get("/system/function/{name}")
async def system_function(name: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = _p(request)
    return function_status(p, p.functions.get(function_id(name, target_namespace(request, key))))


@router.post("/system/scale-function/{name}")
async def system_scale(name: str, request: Request, key: KeyInfo = deploy_scope) -> Response:
    body: ScaleServiceRequest = await _json(request, ScaleServiceRequest)
    if body.serviceName and body.serviceName != name:
        raise InvalidInputError(f"serviceName {body.serviceName!r} does not match the URL name {name!r}")
    namespace = target_namespace(request, key, body.namespace or None)
    await _p(request).scale(function_id(name, namespace), replicas=body.replicas)
    return Response(status_code=202)


@router.get("/system/secrets")
async def system_secrets(request: Request, key: KeyInfo = deploy_scope) -> list[dict[str, str]]:
    secrets = _p(request).secrets.list(target_namespace(request, key))
    return [{"name": secret_display_name(s), "namespace": s.namespace} for s in secrets]


@router.post("/system/secrets", status_code=201)
async def system_secret_create(request: Request, key: KeyInfo = deploy_scope) -> Response:
    body: SecretRequest = await _json(request, SecretRequest)
    namespace = target_namespace(request, key, body.namespace or None)
    _p(request).secrets.create(body.name, body.bytes_value(), namespace)
    return Response(status_code=201)


@router.put("/system/secrets")
async def system_secret_update(request: Request, key: KeyInfo = deploy_scope) -> Response:
    body: SecretRequest = await _json(request, SecretRequest)
    namespace = target_namespace(request, key, body.namespace or None)
    _p(request).secrets.update(body.name, body.bytes_value(), namespace)
    return Response(status_code=200)


@router.delete("/system/secrets")
async def system_secret_delete(request: Request, key: KeyInfo = deploy_scope) -> Response:
    body: SecretRequest = await _json(request, SecretRequest)
    _p(request).secrets.delete(body.name, target_namespace(request, key, body.namespace or None))
    # 200 with no body, as the OpenFaaS gateway answers (faas-cli accepts only 200 or 202 here)
    return Response(status_code=200)


def _log_line(e: LogEntry) -> bytes:
    name, _, namespace = e.function.partition(".")
    return (
        json.dumps(
            {
                "name": name,
                "namespace": namespace or NAMESPACE,
                "instance": e.instance or e.execution_id or "",
                "timestamp": e.timestamp.isoformat().replace("+00:00", "Z"),
                "text": e.text,
                "stream": e.stream,  # extensions: OpenFaaS clients ignore unknown fields
                "execution_id": e.execution_id,
            }
        )
        + "\n"
    ).encode()


@router.get("/system/logs")
async def system_logs(
    request: Request,
    name: str,
    tail: int | None = Query(None, ge=-1, description="last N lines; -1 or absent: all lines (faas-cli)"),
    follow: bool = False,
    since: datetime | None = None,
    key: KeyInfo = deploy_scope,
) -> StreamingResponse:
    p = _p(request)
    fid = function_id(name, target_namespace(request, key))
    p.functions.get(fid)
    # Subscribe before reading the history: a line stored in between is then queued (and, if the
    # query saw it too, skipped by id), never lost.
    follower = p.logs.follow(fid) if follow else None
    try:
        history = p.logs.query(fid, tail=tail if tail is not None and tail > 0 else None, since=since)
    except BaseException:
        if follower is not None:
            follower.close()
        raise
    if follower is not None:
        follower.skip([e.id for e in history])

    async def lines() -> AsyncIterator[bytes]:
        try:
            for e in history:
                yield _log_line(e)
            if follower is None:
                return
            while True:
                # get() returns None after a quiet second (it cancels nothing), so a client that went
                # away is noticed even when no line comes.
                line = await follower.get(timeout=1.0)
                if line is not None:
                    yield _log_line(line)
                elif await request.is_disconnected():
                    return
        finally:
            if follower is not None:
                follower.close()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# -- invocation ---------------------------------------------------------------------------------
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def address_function_id(address: str, key: KeyInfo | None) -> str:
    """The function id of an OpenFaaS address ``<name>`` or ``<name>.<namespace>``. With function auth
    on, a namespaced key reaches only its own namespace's functions (others: 404, as absent ones)."""
    name, namespace = parse_function_address(address)
    if key is not None and not key.access.sees(namespace):
        if address.count(".") == 0:  # a bare name means the key's own namespace
            namespace = key.access.target()
        else:
            raise NotFoundError(f"function {address!r} does not exist", name=address)
    return function_id(name, namespace)


async def _invoke(name: str, path: str, request: Request, key: KeyInfo | None) -> Response:
    fid = address_function_id(name, key)
    p = _p(request)
    inv = await invocation_from(request, "/" + path)
    outcome = await p.executions.invoke(fid, inv)
    return function_response(outcome, {"X-Call-Id": outcome.execution_id})


@router.api_route("/function/{name}", methods=_METHODS, include_in_schema=False)
async def function_root(name: str, request: Request, key: KeyInfo | None = function_scope) -> Response:
    return await _invoke(name, "", request, key)


@router.api_route("/function/{name}/{path:path}", methods=_METHODS, include_in_schema=False)
async def function_path(
    name: str, path: str, request: Request, key: KeyInfo | None = function_scope
) -> Response:
    return await _invoke(name, path, request, key)


async def _invoke_async(name: str, path: str, request: Request, key: KeyInfo | None) -> Response:
    fid = address_function_id(name, key)
    p = _p(request)
    inv = await invocation_from(request, "/" + path)
    ex = p.executions.submit(fid, inv, callback_url=request.headers.get("x-callback-url") or None)
    return Response(status_code=202, headers={"X-Call-Id": ex.id, "X-Execution-Id": ex.id})


@router.api_route(
    "/async-function/{name}", methods=["POST", "PUT", "PATCH", "DELETE", "GET"], include_in_schema=False
)
async def async_root(name: str, request: Request, key: KeyInfo | None = function_scope) -> Response:
    return await _invoke_async(name, "", request, key)


@router.api_route(
    "/async-function/{name}/{path:path}",
    methods=["POST", "PUT", "PATCH", "DELETE", "GET"],
    include_in_schema=False,
)
async def async_path(
    name: str, path: str, request: Request, key: KeyInfo | None = function_scope
) -> Response:
    return await _invoke_async(name, path, request, key)


__all__ = ["deployment_to_spec", "router"]
