"""Job types and their arguments: one pydantic model per job type, validated before a job is recorded.

Unknown or malformed arguments are a 422 ``validation_error`` naming the fields
(:class:`JobValidationError`); :func:`recorded_args` is what is stored of a job's arguments (uploaded file
contents replaced by their size). The jobs themselves run in :mod:`faasd.platform.jobs`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

from faasd.errors import FaasdError, InvalidInputError
from faasd.platform.env import EnvVars, EnvVarsOrPairs
from faasd.platform.instances import InstanceSpec
from faasd.platform.merges import MAX_BRANCHES
from faasd.snapshots.seeds import SEED_MAX

JOB_TYPES: tuple[str, ...] = (
    "execute_function",
    "execute_advanced",
    "create_snapshot",
    "restore_snapshot",
    "create_branch",
    "merge_branches",
    "start_instance",
    "stop_instance",
    "pause_instance",
    "resume_instance",
    "expose_port",
    "upload_files",
)


class JobValidationError(FaasdError):
    """Job arguments do not match the job type's schema (same shape as a request validation error)."""

    code = "validation_error"


# ------------------------------------------------------------------------------- arguments
class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ExecuteFunctionArgs(_Args):
    image: str = Field(default="faasd/python:latest", max_length=512)
    command: list[str] | str
    env_vars: EnvVarsOrPairs = Field(
        default_factory=dict, description='an object or a list of "KEY=VALUE" strings (the seed\'s form)'
    )
    payload: str | list[Annotated[StrictInt, Field(ge=0, le=255)]] | None = Field(
        default=None, description="stdin: text, base64 (payload_encoding) or a list of byte values"
    )
    payload_encoding: Literal["text", "base64"] = "text"

    @model_validator(mode="after")
    def _payload_shape(self) -> ExecuteFunctionArgs:
        if isinstance(self.payload, list) and self.payload_encoding != "text":
            raise ValueError("payload_encoding applies to a string payload, not a list of byte values")
        self.payload_bytes()  # base64 errors are argument errors
        return self

    def payload_bytes(self) -> bytes | None:
        if self.payload is None:
            return None
        if isinstance(self.payload, list):
            return bytes(self.payload)
        if self.payload_encoding == "base64":
            try:
                return base64.b64decode(self.payload, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"payload is not valid base64: {exc}") from None
        return self.payload.encode()


class ExecuteAdvancedArgs(ExecuteFunctionArgs):
    mode: Literal["ephemeral", "restore", "checkpoint"] = "ephemeral"
    checkpoint_id: str | None = Field(default=None, max_length=64)
    branch_from: str | None = Field(default=None, max_length=64)
    timeout_secs: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> ExecuteAdvancedArgs:
        if self.checkpoint_id is not None and self.branch_from is not None:
            raise ValueError("give at most one of 'checkpoint_id' and 'branch_from'")
        if self.mode == "restore" and self.snapshot is None:
            raise ValueError("mode 'restore' needs 'checkpoint_id' or 'branch_from'")
        if self.mode == "ephemeral" and self.snapshot is not None:
            self.mode = "restore"
        return self

    @property
    def snapshot(self) -> str | None:
        return self.checkpoint_id or self.branch_from


class CreateSnapshotArgs(_Args):
    container_id: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=1024)


class RestoreSnapshotArgs(_Args):
    snapshot_id: str = Field(min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)


class CreateBranchArgs(_Args):
    parent_snapshot_id: str = Field(min_length=1, max_length=64)
    branch_name: str = Field(min_length=1, max_length=128)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)


class MergeBranchesArgs(_Args):
    branch_ids: list[str] = Field(min_length=2, max_length=MAX_BRANCHES)
    merge_strategy: str = Field(default="fail", max_length=32)


class StartInstanceArgs(_Args):
    snapshot_id: str | None = Field(default=None, max_length=64)
    image: str | None = Field(default=None, max_length=512)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)
    memory_mb: int = Field(default=512, ge=16, le=65536)
    disk_gb: float = Field(default=1.0, gt=0, le=1024)
    enable_ssh: bool = False
    name: str | None = Field(default=None, max_length=128)
    ttl_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    env: EnvVars = Field(default_factory=dict)

    def spec(self) -> InstanceSpec:
        return InstanceSpec(
            snapshot_id=self.snapshot_id,
            image=self.image,
            cpu_cores=self.cpu_cores,
            memory_mb=self.memory_mb,
            disk_gb=self.disk_gb,
            enable_ssh=self.enable_ssh,
            name=self.name,
            ttl_s=self.ttl_s,
            env=dict(self.env),
        )


class InstanceArgs(_Args):
    instance_id: str = Field(min_length=1, max_length=40)


class ExposePortArgs(InstanceArgs):
    internal_port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "tcp"] = "http"
    subdomain: str | None = None


class FileArg(_Args):
    """One file of ``upload_files``: ``content`` is base64."""

    path: str = Field(min_length=1, max_length=4096)
    content: str
    mode: int = Field(default=0o644, ge=0, le=0o7777)


class UploadFilesArgs(InstanceArgs):
    target_path: str = Field(default="/", min_length=1, max_length=4096)
    files_data: list[FileArg] | str = Field(
        description="a list of files (base64 contents) or a tar archive, base64-encoded (the seed's form)"
    )

    @model_validator(mode="after")
    def _files_shape(self) -> UploadFilesArgs:
        if isinstance(self.files_data, list) and not self.files_data:
            raise ValueError("files_data must name at least one file")
        if isinstance(self.files_data, str):
            self.tar_bytes()
        return self

    def tar_bytes(self) -> bytes:
        assert isinstance(self.files_data, str)
        try:
            data = base64.b64decode(self.files_data, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"files_data is not a base64 tar archive: {exc}") from None
        if not data:
            raise ValueError("files_data is an empty archive")
        return data


ARG_MODELS: dict[str, type[_Args]] = {
    "execute_function": ExecuteFunctionArgs,
    "execute_advanced": ExecuteAdvancedArgs,
    "create_snapshot": CreateSnapshotArgs,
    "restore_snapshot": RestoreSnapshotArgs,
    "create_branch": CreateBranchArgs,
    "merge_branches": MergeBranchesArgs,
    "start_instance": StartInstanceArgs,
    "stop_instance": InstanceArgs,
    "pause_instance": InstanceArgs,
    "resume_instance": InstanceArgs,
    "expose_port": ExposePortArgs,
    "upload_files": UploadFilesArgs,
}


def job_type(value: int | str) -> tuple[int, str]:
    """``(number, name)`` of a job type given as either."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(JOB_TYPES):
            return value, JOB_TYPES[value]
    elif isinstance(value, str):
        if value.isdigit() and int(value) < len(JOB_TYPES):
            return int(value), JOB_TYPES[int(value)]
        if value in JOB_TYPES:
            return JOB_TYPES.index(value), value
    raise InvalidInputError(
        f"unknown job type {value!r}; use 0-{len(JOB_TYPES) - 1} or one of {', '.join(JOB_TYPES)}",
        types=list(JOB_TYPES),
    )


def parse_args(name: str, args: dict[str, Any]) -> _Args:
    try:
        return ARG_MODELS[name].model_validate(args)
    except ValidationError as exc:
        errors = [
            {"loc": ["args", *e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        raise JobValidationError(
            f"invalid arguments for job {name}: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            errors=errors,
        ) from None


def recorded_args(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments as stored with the job: uploaded file contents are replaced by their size."""
    files = args.get("files_data")
    if isinstance(files, str):
        return {**args, "files_data": f"<tar archive, {len(files)} base64 chars>"}
    if not isinstance(files, list):
        return dict(args)
    slim = [
        {**f, "content": f"<{len(str(f.get('content', '')))} base64 chars>"} if isinstance(f, dict) else f
        for f in files
    ]
    return {**args, "files_data": slim}
