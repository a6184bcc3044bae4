"""Jobs ``/api/v1/jobs``: twelve typed operations run synchronously (see docs/API.md, "Jobs")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from faasd.api.auth import require
from faasd.api.namespacing import list_namespace, target_namespace
from faasd.errors import NotFoundError
from faasd.platform.jobs import JOB_TYPES, JobService, job_dict
from faasd.platform.keys import KeyInfo

router = APIRouter(prefix="/api/v1/jobs")

invoke_scope = Depends(require("invoke"))
deploy_scope = Depends(require("deploy"))


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: int | str
    args: dict[str, Any] = Field(default_factory=dict)


def jobs_of(request: Request) -> JobService:
    svc: JobService = request.app.state.platform.jobs
    return svc


@router.get("/types")
async def job_types(_k: KeyInfo = invoke_scope) -> dict[str, Any]:
    return {"types": [{"type": i, "name": n} for i, n in enumerate(JOB_TYPES)]}


@router.post("")
async def run_job(body: JobRequest, request: Request, key: KeyInfo = deploy_scope) -> dict[str, Any]:
    """The job acts in the request's namespace (the key's, or ``?namespace=``): the ids it names must be
    of that namespace, what it creates belongs to it."""
    job = await jobs_of(request).run(body.type, body.args, target_namespace(request, key))
    return job_dict(job)


@router.get("")
async def list_jobs(
    request: Request, limit: int = Query(default=50, ge=1, le=1000), key: KeyInfo = invoke_scope
) -> dict[str, Any]:
    return {"jobs": [job_dict(j) for j in jobs_of(request).list(limit, list_namespace(request, key))]}


@router.get("/{job_id}")
async def get_job(job_id: str, request: Request, key: KeyInfo = invoke_scope) -> dict[str, Any]:
    svc = jobs_of(request)
    missing = NotFoundError(f"job {job_id!r} does not exist", job=job_id)
    try:
        job = svc.get(job_id)
    except NotFoundError:
        raise missing from None
    if not key.access.sees(job.namespace):
        raise missing
    return job_dict(job)
