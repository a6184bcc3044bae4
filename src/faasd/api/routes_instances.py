"""Persistent instances ``/api/v1/instances`` (see docs/API.md, "Instances")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from faasd.api.auth import require
from faasd.api.errors import loads_json
from faasd.api.instance_models import ExecRequest, ExposeRequest, StartInstanceRequest, UploadRequest
from faasd.api.invoke import read_body
from faasd.api.namespacing import list_namespace, target_namespace, visible_ref
from faasd.errors import NotFoundError, RuntimeFailure
from faasd.platform.core import Platform
from faasd.platform.errors import UnavailableError
from faasd.platform.instances import InstanceService, instance_dict
from faasd.platform.keys import KeyInfo
from faasd.runtime.headers import CREDENTIALS, FRAMING, HOP_BY_HOP, relayable

router = APIRouter(prefix="/api/v1/instances")

invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))

# hop-by-hop headers, framing and our own credentials never cross the port proxy
_PROXY_DROP = HOP_BY_HOP | FRAMING | CREDENTIALS


def instances_of(request: Request) -> InstanceService:
    p: Platform = request.app.state.platform
    svc = p.instances
    if svc is None:
        raise UnavailableError(
            "instances are not available: the daemon runs without an image store or sandbox manager"
        )
    return svc


def owned(request: Request, key: KeyInfo, instance_id: str) -> str:
    """``instance_id`` if the key may see that instance; else the 404 of an absent one."""
    visible_ref(request, key, instance_id, "instance")
    return instance_id


def check_source_snapshot(request: Request, key: KeyInfo, snapshot_id: str | None, namespace: str) -> None:
    """A new instance's snapshot must be one of its own namespace (else: 404, as an absent one)."""
    if snapshot_id is not None and visible_ref(request, key, snapshot_id, "snapshot") != namespace:
        raise NotFoundError(f"snapshot {snapshot_id[:80]!r} does not exist", id=snapshot_id[:80])


@router.post("", status_code=201)
async def start_instance(
    body: StartInstanceRequest, request: Request, key: KeyInfo = deploy_scope
) -> dict[str, Any]:
    namespace = target_namespace(request, key, body.namespace)
    check_source_snapshot(request, key, body.snapshot_id, namespace)
    return instance_dict(await instances_of(request).create(body.spec(), namespace))


@router.get("")
async def list_instances(request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    svc = instances_of(request)
    return {"instances": [instance_dict(i) for i in svc.list(list_namespace(request, key))]}


@router.get("/{instance_id}")
async def get_instance(instance_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    return instance_dict(instances_of(request).get(owned(request, key, instance_id)))


@router.delete("/{instance_id}", status_code=204)
async def delete_instance(instance_id: str, request: Request, key: KeyInfo = deploy_scope) -> Response:
    await instances_of(request).delete(owned(request, key, instance_id))
    return Response(status_code=204)


@router.post("/{instance_id}/start")
async def start_again(instance_id: str, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    return instance_dict(await instances_of(request).start(owned(request, key, instance_id)))


@router.post("/{instance_id}/stop")
async def stop_instance(instance_id: str, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    return instance_dict(await instances_of(request).stop(owned(request, key, instance_id)))


@router.post("/{instance_id}/pause")
async def pause_instance(instance_id: str, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    return instance_dict(await instances_of(request).pause(owned(request, key, instance_id)))


@router.post("/{instance_id}/resume")
async def resume_instance(instance_id: str, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    return instance_dict(await instances_of(request).resume(owned(request, key, instance_id)))


@router.post("/{instance_id}/exec")
async def exec_instance(
    instance_id: str, body: ExecRequest, request: Request, key: KeyInfo = deploy_scope
) -> dict[str, Any]:
    return await instances_of(request).exec(owned(request, key, instance_id), body.command_spec())


@router.put("/{instance_id}/files")
async def upload_files(
    instance_id: str,
    request: Request,
    path: str = Query(default="/", max_length=4096),
    key: KeyInfo = deploy_scope,
) -> dict[str, Any]:
    """A tar archive body (any content type but JSON) is extracted under ``?path=``; a JSON body is
    an :class:`UploadRequest` (``{"target_path", "files": [{"path", "content" (base64), "mode"}]}``)."""
    svc = instances_of(request)
    owned(request, key, instance_id)
    raw = await read_body(request)
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        try:
            req = UploadRequest.model_validate(loads_json(raw))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return await svc.upload_files(instance_id, req.target_path, req.decoded())
    return await svc.upload_tar(instance_id, path, raw)


@router.get("/{instance_id}/files")
async def download_files(
    instance_id: str,
    request: Request,
    path: str = Query(max_length=4096),
    key: KeyInfo = deploy_scope,
) -> Response:
    data = await instances_of(request).download(owned(request, key, instance_id), path)
    return Response(data, media_type="application/x-tar")


@router.post("/{instance_id}/ports")
async def expose_port(
    instance_id: str, body: ExposeRequest, request: Request, key: KeyInfo = deploy_scope
) -> dict[str, Any]:
    return await instances_of(request).expose(owned(request, key, instance_id), body.spec())


async def forward_http(
    instance_id: str, port: int, path: str, request: Request, key: KeyInfo = invoke_scope
) -> Response:
    """Forward one HTTP request to an exposed port of the instance (through its host listener, which
    resumes an auto-paused instance)."""
    host_port = instances_of(request).host_port(owned(request, key, instance_id), port)
    body = await read_body(request)
    headers = dict(relayable(request.headers.items(), _PROXY_DROP))
    url = f"http://127.0.0.1:{host_port}/{path}"
    if request.url.query:
        url += "?" + request.url.query
    import httpx  # only the instance proxy needs an HTTP client: not loaded at daemon start

    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
            resp = await client.request(request.method, url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise RuntimeFailure(
            f"forwarding to port {port} of instance {instance_id} failed: {type(exc).__name__}: {exc}; "
            "is a server listening on that port inside the instance?",
            port=port,
        ) from None
    out_headers = dict(relayable(resp.headers.items(), _PROXY_DROP | {"content-encoding"}))
    return Response(resp.content, status_code=resp.status_code, headers=out_headers)


for _method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
    router.add_api_route(
        "/{instance_id}/ports/{port}/{path:path}",
        forward_http,
        methods=[_method],
        operation_id=f"forward_http_{_method.lower()}",
    )
