"""Images and registries: ``/api/v1/images`` (see docs/API.md, "Registries")."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from faasd.api.auth import require
from faasd.platform.keys import KeyInfo
from faasd.platform.pulls import ImageEnsurer

router = APIRouter(prefix="/api/v1/images", tags=["images"])
deploy_scope = Depends(require("deploy"))

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid reference, or an image faasd cannot read"},
    404: {"description": "the image is not in the registry (pull) or the local store (push)"},
    409: {"description": "the same blob is being downloaded by another pull"},
    424: {"description": "the registry is unreachable, refused the credentials, or sent corrupt content"},
    503: {"description": "the daemon runs without an image store"},
}


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str = Field(
        min_length=1, max_length=512, description="e.g. 'alpine:3.19' or 'host:5000/team/app:v1'"
    )


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str = Field(min_length=1, max_length=512, description="where to push, e.g. 'host:5000/team/app:v1'")
    source: str | None = Field(None, max_length=512, description="local image to push (default: ``ref``)")


class ImageLayerView(BaseModel):
    digest: str
    diff_id: str
    chain_id: str
    media_type: str
    size: int


class ImageView(BaseModel):
    """An image in the daemon's store."""

    id: str
    short_id: str
    manifest_digest: str
    refs: list[str]
    architecture: str | None
    os: str | None
    created: str | None
    size: int
    config: dict[str, Any]
    layers: list[ImageLayerView]
    leases: list[str]


class PushView(BaseModel):
    """What a push sent: the manifest digest the registry serves, and what happened to each blob."""

    ref: str
    digest: str
    size: int
    uploaded: list[str]
    mounted: list[str]
    existing: list[str]


def _registry(request: Request) -> ImageEnsurer:
    pulls: ImageEnsurer = request.app.state.platform.image_pulls
    return pulls


@router.post("/pull", responses=_ERRORS, response_model=ImageView)
async def pull_image(body: PullRequest, request: Request, _k: KeyInfo = deploy_scope) -> dict[str, Any]:
    """Pull an image from its registry into the daemon's image store (Docker naming)."""
    image = await _registry(request).pull(body.ref)
    return image.to_dict()


@router.post("/push", responses=_ERRORS, response_model=PushView)
async def push_image(body: PushRequest, request: Request, _k: KeyInfo = deploy_scope) -> dict[str, Any]:
    """Push an image from the daemon's image store to a registry."""
    return asdict(await _registry(request).push(body.ref, body.source))
