"""Request models of instances (``POST /api/v1/instances``, exec, ports, files).

Each validates a request (a 422 naming the fields) and turns it into what the platform takes: the
dataclasses of :mod:`faasd.platform.instances.specs`.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faasd.errors import InvalidInputError
from faasd.platform.env import EnvVars
from faasd.platform.instances.specs import (
    DEFAULT_IMAGE,
    ExecCommand,
    InstanceSpec,
    PortSpec,
    UploadedFile,
)


class StartInstanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(default=None, max_length=512)
    snapshot_id: str | None = Field(default=None, max_length=64)
    namespace: str | None = Field(default=None, max_length=63)
    """The namespace the instance belongs to (default: the key's, else ``?namespace=``, else the default
    one)."""
    name: str | None = Field(default=None, max_length=128)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)
    memory_mb: int = Field(default=512, ge=16, le=65536)
    disk_gb: float = Field(default=1.0, gt=0, le=1024)
    pids: int = Field(default=4096, ge=16, le=65536)
    isolation: Literal["runc", "gvisor"] | None = None
    """Default: the daemon's ``FAASD_ISOLATION``. Under ``gvisor`` the instance has no network (ports cannot
    be exposed) and cannot be snapshotted (CRIU)."""
    ttl_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    env: EnvVars = Field(default_factory=dict)
    enable_ssh: bool = False
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    """With ``snapshot_id``: the instance is copy 0 of a branch with this seed. Instances run no
    agent, so restored processes keep their memory (PRNG state included) as captured; every command
    exec'd in the instance gets ``FAASD_SEED`` (the copy's derived seed) in its environment."""

    @model_validator(mode="after")
    def _source(self) -> StartInstanceRequest:
        if self.image is None and self.snapshot_id is None:
            self.image = DEFAULT_IMAGE
        if self.seed is not None and self.snapshot_id is None:
            raise ValueError("'seed' needs 'snapshot_id' (it seeds a copy restored from a snapshot)")
        return self

    def spec(self) -> InstanceSpec:
        return InstanceSpec(
            image=self.image,
            snapshot_id=self.snapshot_id,
            name=self.name,
            cpu_cores=self.cpu_cores,
            memory_mb=self.memory_mb,
            disk_gb=self.disk_gb,
            pids=self.pids,
            isolation=self.isolation,
            ttl_s=self.ttl_s,
            env=dict(self.env),
            enable_ssh=self.enable_ssh,
            seed=self.seed,
        )


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: list[str] | str
    stdin: str | None = None
    stdin_base64: str | None = None
    env: EnvVars = Field(default_factory=dict)
    cwd: str | None = Field(default=None, max_length=4096)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> ExecRequest:
        if isinstance(self.command, list) and not self.command:
            raise ValueError("'command' must not be empty")
        if self.stdin is not None and self.stdin_base64 is not None:
            raise ValueError("give at most one of 'stdin' and 'stdin_base64'")
        return self

    def args(self) -> list[str]:
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)

    def stdin_bytes(self) -> bytes:
        if self.stdin_base64 is not None:
            try:
                return base64.b64decode(self.stdin_base64, validate=True)
            except ValueError as exc:
                raise InvalidInputError(f"stdin_base64 is not valid base64: {exc}") from None
        return (self.stdin or "").encode()

    def command_spec(self) -> ExecCommand:
        """The command for the platform (a bad ``stdin_base64`` is a 400)."""
        return ExecCommand(
            args=self.args(),
            stdin=self.stdin_bytes(),
            env=dict(self.env),
            cwd=self.cwd,
            timeout_s=self.timeout_s,
        )


class ExposeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    internal_port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "tcp"] = "http"
    subdomain: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

    def spec(self) -> PortSpec:
        return PortSpec(internal_port=self.internal_port, protocol=self.protocol, subdomain=self.subdomain)


class UploadFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)
    content: str
    """base64 of the file's bytes."""
    mode: int = Field(default=0o644, ge=0, le=0o7777)

    def decoded(self) -> UploadedFile:
        """The file with its content decoded (bad base64 is a 400 naming the file)."""
        return UploadedFile.from_base64(self.path, self.content, self.mode)


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target_path: str = Field(default="/", min_length=1, max_length=4096)
    files: list[UploadFile] = Field(min_length=1)

    def decoded(self) -> list[UploadedFile]:
        return [f.decoded() for f in self.files]
