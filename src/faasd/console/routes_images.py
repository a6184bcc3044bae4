"""Images (list, chunked upload + import with progress, remove) and branch-of-N with progress."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from faasd.api.invoke import read_body
from faasd.console.deps import console_of, deploy_scope, invoke_scope, platform_of
from faasd.console.operations import Operation
from faasd.errors import ConflictError, InvalidInputError, NotFoundError
from faasd.images.models import ProgressEvent
from faasd.images.store import ImageStore
from faasd.platform.core import Platform
from faasd.platform.errors import UnavailableError
from faasd.platform.keys import KeyInfo
from faasd.platform.snapshots import RestoredSandbox, SnapshotService

router = APIRouter(prefix="/ui/api")

MAX_UPLOAD_BYTES = 8 * 1024**3
_UPLOAD_ID = re.compile(r"^up-[0-9a-f]{16}$")


def store_of(p: Platform) -> ImageStore:
    if not isinstance(p.images, ImageStore):
        raise UnavailableError("this daemon runs without an image store")
    return p.images


def _uploads_dir(p: Platform) -> Path:
    return p.settings.data_dir / "tmp" / "console-uploads"


def _upload_path(p: Platform, upload_id: str) -> Path:
    if not _UPLOAD_ID.match(upload_id):
        raise InvalidInputError(f"malformed upload id {upload_id!r}")
    path = _uploads_dir(p) / upload_id
    if not path.exists():
        raise NotFoundError(f"upload {upload_id} does not exist (already imported?)", id=upload_id)
    return path


@router.get("/images")
async def list_images(request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    store = store_of(platform_of(request))
    images = await asyncio.to_thread(store.list)
    return {"images": [img.to_dict() for img in images], "registry": _registry_note(platform_of(request))}


def _registry_note(p: Platform) -> str:
    """How this daemon reaches registries, for the pull form."""
    s = p.settings
    mirrors = ", ".join(f"{host} → {mirror}" for host, mirror in s.registry_mirrors.items())
    parts = ["pulls speak the OCI distribution API (credentials from the docker config.json)"]
    if mirrors:
        parts.append(f"mirrors: {mirrors}")
    if not s.pull_missing_images:
        parts.append("missing images are not pulled on demand (FAASD_PULL_MISSING_IMAGES=false)")
    return "; ".join(parts)


@router.delete("/images/{ref:path}", status_code=204)
async def remove_image(
    ref: str, request: Request, force: bool = Query(default=False), _k: KeyInfo = deploy_scope
) -> Response:
    p = platform_of(request)
    users = [fn.name for fn in p.functions.list() if fn.image == ref]
    if users and not force:
        raise ConflictError(
            f"image {ref!r} is used by functions {users}; delete or update them first", users=users
        )
    await asyncio.to_thread(store_of(p).remove, ref, force)
    return Response(status_code=204)


# -- uploads: the browser sends a large archive in chunks under the request size limit ----------
@router.post("/uploads", status_code=201)
async def new_upload(request: Request, _k: KeyInfo = deploy_scope) -> dict[str, Any]:
    p = platform_of(request)
    d = _uploads_dir(p)
    d.mkdir(parents=True, exist_ok=True)
    upload_id = "up-" + secrets.token_hex(8)
    (d / upload_id).touch(mode=0o600)
    return {"id": upload_id, "chunk_bytes": max(1, p.settings.max_payload_bytes // 2)}


@router.put("/uploads/{upload_id}")
async def upload_chunk(
    upload_id: str, request: Request, offset: int = Query(ge=0), _k: KeyInfo = deploy_scope
) -> dict[str, Any]:
    p = platform_of(request)
    path = _upload_path(p, upload_id)
    data = await read_body(request)
    size = path.stat().st_size
    if offset != size:
        raise ConflictError(f"chunk at offset {offset} but the upload has {size} bytes", size=size)
    if size + len(data) > MAX_UPLOAD_BYTES:
        path.unlink(missing_ok=True)
        raise InvalidInputError(f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    with path.open("ab") as f:
        await asyncio.to_thread(f.write, data)
    return {"id": upload_id, "size": size + len(data)}


@router.delete("/uploads/{upload_id}", status_code=204)
async def drop_upload(upload_id: str, request: Request, _k: KeyInfo = deploy_scope) -> Response:
    _upload_path(platform_of(request), upload_id).unlink(missing_ok=True)
    return Response(status_code=204)


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upload_id: str = Field(min_length=1, max_length=64)
    ref: str | None = Field(default=None, max_length=512)


@router.post("/images/import", status_code=202)
async def import_image(body: ImportRequest, request: Request, _k: KeyInfo = deploy_scope) -> JSONResponse:
    """Import an uploaded docker/OCI archive; answers 202 with an operation to follow."""
    p = platform_of(request)
    store = store_of(p)
    path = _upload_path(p, body.upload_id)
    ops = console_of(request).operations
    loop = asyncio.get_running_loop()

    async def work(op: Operation) -> Any:
        def progress(ev: ProgressEvent) -> None:
            total, done = (ev.bytes_total, ev.bytes_done) if ev.bytes_total else (ev.total_steps, ev.step)
            loop.call_soon_threadsafe(op.progress, done, total, f"{ev.phase}: {ev.description}")

        try:
            img = await asyncio.to_thread(store.import_archive, path, body.ref or None, progress)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return img.to_dict()

    op = ops.start("import", f"import {body.ref or 'image'}", work)
    return JSONResponse(op.to_dict(), status_code=202)


# -- branch of N with progress ------------------------------------------------------------------
class BranchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=2, ge=1, le=64)


def snapshots_of(p: Platform) -> SnapshotService:
    if p.snapshots is None:
        raise UnavailableError("this daemon runs without a sandbox runtime; snapshots are not available")
    return p.snapshots


@router.post("/snapshots/{snapshot_id}/branch", status_code=202)
async def branch(
    snapshot_id: str, body: BranchRequest, request: Request, _k: KeyInfo = deploy_scope
) -> JSONResponse:
    """Like ``POST /api/v1/snapshots/{id}/branch`` (all or nothing) but one copy at a time, reporting
    progress; answers 202 with an operation whose result is ``{"sandboxes": [...]}``."""
    svc = snapshots_of(platform_of(request))
    svc.require(snapshot_id)  # 404 / 400 now, not in the operation

    async def work(op: Operation) -> Any:
        made: list[RestoredSandbox] = []
        op.progress(0, body.count, f"restoring copy 1 of {body.count}")
        try:
            for i in range(body.count):
                made.extend(await svc.branch(snapshot_id, 1))
                op.progress(i + 1, body.count, f"{i + 1} of {body.count} copies running")
        except BaseException:
            for sb in made:
                with contextlib.suppress(Exception):
                    await svc.destroy(sb.id)
            raise
        return {"sandboxes": [sb.to_dict() for sb in made]}

    op = console_of(request).operations.start("branch", f"branch {snapshot_id} x{body.count}", work)
    return JSONResponse(op.to_dict(), status_code=202)


def cleanup_uploads(p: Platform) -> None:
    shutil.rmtree(_uploads_dir(p), ignore_errors=True)
