"""OCI / Docker image metadata: wire models (manifest, index, config) and the store's view of an image."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from faasd.content import digest as dg
from faasd.errors import InvalidInputError

# Media types -------------------------------------------------------------------------------
OCI_LAYOUT_VERSION = "1.0.0"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
MANIFEST_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}
LAYER_TYPES = {
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_DOCKER_LAYER,
    MT_DOCKER_LAYER_GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Manifests, indexes and configs larger than this are refused (they are a few KiB in practice)."""


def layer_media_type(compression: str) -> str:
    return {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD}.get(compression, MT_OCI_LAYER)


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON encoding used for every document this store writes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_json(data: bytes, what: str) -> Any:
    if len(data) > MAX_JSON_BYTES:
        raise InvalidInputError(f"{what} is {len(data)} bytes, more than the {MAX_JSON_BYTES} allowed")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None


M = TypeVar("M", bound=BaseModel)


# Wire models -----------------------------------------------------------------------------------
class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class Platform(_Wire):
    architecture: str = ""
    os: str = ""
    variant: str | None = None


class Descriptor(_Wire):
    media_type: str = Field("", alias="mediaType")
    digest: str
    size: int = Field(ge=0)
    annotations: dict[str, str] | None = None
    platform: Platform | None = None

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not dg.is_digest(v):
            raise ValueError(f"invalid digest {v!r} (only sha256 is supported)")
        return v


class Manifest(_Wire):
    schema_version: int = Field(2, alias="schemaVersion")
    media_type: str | None = Field(None, alias="mediaType")
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] | None = None


class Index(_Wire):
    schema_version: int = Field(2, alias="schemaVersion")
    media_type: str | None = Field(None, alias="mediaType")
    manifests: list[Descriptor]
    annotations: dict[str, str] | None = None


class RootFS(_Wire):
    type: str = "layers"
    diff_ids: list[str] = Field(default_factory=list)

    @field_validator("diff_ids")
    @classmethod
    def _diff_ids(cls, v: list[str]) -> list[str]:
        for d in v:
            if not dg.is_digest(d):
                raise ValueError(f"invalid diff_id {d!r}")
        return v


class ContainerConfig(_Wire):
    """The ``config`` object of an image config (Docker/OCI spelling)."""

    User: str | None = None
    ExposedPorts: dict[str, Any] | None = None
    Env: list[str] | None = None
    Entrypoint: list[str] | None = None
    Cmd: list[str] | None = None
    WorkingDir: str | None = None
    Labels: dict[str, str] | None = None
    StopSignal: str | None = None

    @field_validator("Entrypoint", "Cmd", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> Any:
        # Some legacy Docker configs carry a plain string; Docker treats it as a one-element argv.
        return [v] if isinstance(v, str) else v


class ConfigFile(_Wire):
    architecture: str = ""
    os: str = ""
    created: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS
    history: list[dict[str, Any]] | None = None


def parse_model(model: type[M], data: bytes, what: str) -> M:
    obj = parse_json(data, what)
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InvalidInputError(f"{what} is invalid at {loc}: {first['msg']}") from None


# Store-level view ------------------------------------------------------------------------------
class ImageConfig(BaseModel):
    """What a runtime needs from an image config."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = Field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    exposed_ports: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    stop_signal: str | None = None

    @field_validator("env")
    @classmethod
    def _env(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"environment entry {item!r} must look like NAME=value")
        return v

    @classmethod
    def from_container_config(cls, c: ContainerConfig | None) -> ImageConfig:
        if c is None:
            return cls()
        return cls(
            entrypoint=c.Entrypoint,
            cmd=c.Cmd,
            env=list(c.Env or []),
            working_dir=c.WorkingDir or "",
            user=c.User or "",
            exposed_ports=sorted((c.ExposedPorts or {}).keys()),
            labels=dict(c.Labels or {}),
            stop_signal=c.StopSignal,
        )

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.env:
            out["Env"] = list(self.env)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        return out

    def env_dict(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.env)


@dataclass(frozen=True)
class Layer:
    digest: str
    """Digest of the blob as stored (compressed as shipped)."""
    diff_id: str
    """Digest of the uncompressed tar."""
    chain_id: str
    media_type: str
    size: int
    """Size of the stored blob in bytes."""


@dataclass(frozen=True)
class Image:
    id: str
    """The config digest (``sha256:...``), like Docker's image id."""
    manifest_digest: str
    refs: list[str]
    config: ImageConfig
    layers: list[Layer]
    size: int
    """Bytes of blobs (config + layers) as stored."""
    architecture: str = ""
    os: str = ""
    created: str | None = None
    leases: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return dg.hex_of(self.id)[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "short_id": self.short_id,
            "manifest_digest": self.manifest_digest,
            "refs": list(self.refs),
            "architecture": self.architecture,
            "os": self.os,
            "created": self.created,
            "size": self.size,
            "config": self.config.model_dump(),
            "layers": [
                {
                    "digest": x.digest,
                    "diff_id": x.diff_id,
                    "chain_id": x.chain_id,
                    "media_type": x.media_type,
                    "size": x.size,
                }
                for x in self.layers
            ],
            "leases": list(self.leases),
        }


@dataclass
class GcReport:
    removed_images: list[str] = field(default_factory=list)
    removed_blobs: list[str] = field(default_factory=list)
    removed_layers: list[str] = field(default_factory=list)
    freed_bytes: int = 0


@dataclass(frozen=True)
class ProgressEvent:
    """Reported to an import/build ``progress`` callback.

    ``phase`` is one of ``read`` (parsing the archive), ``blob`` (copying into the content store),
    ``unpack`` (extracting a layer), ``done``. ``step``/``total_steps`` count blobs+layers;
    ``bytes_done``/``bytes_total`` are cumulative over the whole operation (total may be unknown).
    """

    phase: str
    description: str
    step: int
    total_steps: int
    bytes_done: int
    bytes_total: int | None
