"""Namespaces (tenants) and their quotas: ``/api/v1/namespaces`` (changes: admin keys)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from faasd.api.auth import require
from faasd.errors import NotFoundError
from faasd.platform.core import Platform
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import Quotas
from faasd.state import Namespace
from faasd.state.models import INT_COLUMN_MAX, iso

router = APIRouter(prefix="/api/v1")
invoke_scope = Depends(require("invoke"))
admin_scope = Depends(require("admin"))

Quota = int | None


class QuotaFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    max_sandboxes: Quota = Field(default=None, ge=0, le=INT_COLUMN_MAX)
    max_memory_mb: Quota = Field(default=None, ge=0, le=INT_COLUMN_MAX)
    max_disk_mb: Quota = Field(default=None, ge=0, le=INT_COLUMN_MAX)
    max_snapshots: Quota = Field(default=None, ge=0, le=INT_COLUMN_MAX)


class NamespaceCreate(QuotaFields):
    name: str = Field(min_length=1, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)


def _p(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def namespace_view(p: Platform, row: Namespace) -> dict[str, Any]:
    return {
        "name": row.name,
        "quotas": Quotas.of(row).as_dict(),
        "usage": p.tenancy.usage(row.name).as_dict(),
        "labels": dict(row.labels or {}),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def _visible(key: KeyInfo, name: str) -> None:
    if not key.access.sees(name):
        raise NotFoundError(f"namespace {name!r} does not exist", namespace=name)


@router.get("/namespaces")
async def list_namespaces(request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = _p(request)
    rows = [r for r in p.namespaces.list() if key.access.sees(r.name)]
    return {"namespaces": [namespace_view(p, r) for r in rows]}


@router.post("/namespaces", status_code=201)
async def create_namespace(
    body: NamespaceCreate, request: Request, _k: KeyInfo = admin_scope
) -> JSONResponse:
    p = _p(request)
    quotas = Quotas(body.max_sandboxes, body.max_memory_mb, body.max_disk_mb, body.max_snapshots)
    row = p.namespaces.create(body.name, quotas, body.labels)
    return JSONResponse(namespace_view(p, row), status_code=201)


@router.get("/namespaces/{name}")
async def get_namespace(name: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    _visible(key, name)
    p = _p(request)
    return namespace_view(p, p.namespaces.get(name))


@router.patch("/namespaces/{name}")
async def set_quotas(
    name: str, body: QuotaFields, request: Request, _k: KeyInfo = admin_scope
) -> dict[str, Any]:
    """Change the quotas given in the body (null: unlimited); the others stay."""
    p = _p(request)
    row = p.namespaces.set_quotas(name, body.model_dump(exclude_unset=True))
    return namespace_view(p, row)


@router.delete("/namespaces/{name}", status_code=204)
async def delete_namespace(name: str, request: Request, _k: KeyInfo = admin_scope) -> Response:
    await _p(request).delete_namespace(name)
    return Response(status_code=204)
