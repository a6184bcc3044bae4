"""Jobs: twelve typed operations behind one endpoint (``POST /api/v1/jobs``), run synchronously.

Each job type has a pydantic argument model (unknown or malformed arguments are a 422
``validation_error`` naming the fields) and returns a JSON result. Every job is recorded (arguments,
status, result or error) and can be read back with ``GET /api/v1/jobs/{id}``.

==  =================  =======================================================================
 0  execute_function   run ``command`` on ``image`` in a fresh sandbox; ``payload`` on stdin
 1  execute_advanced   as 0, plus ``timeout_secs``; ``checkpoint_id``/``branch_from`` run it in a
                       sandbox restored from that snapshot (mode ``restore``); mode ``checkpoint``
                       also snapshots the sandbox after the run (result ``snapshot_id``)
 2  create_snapshot    CRIU snapshot of an instance (or of a worker/restored sandbox by id); it
                       becomes the source's new base (the next snapshot of it is a child)
 3  restore_snapshot   start a new instance from a snapshot (optional ``seed``)
 4  create_branch      the same, naming the instance ``branch_name`` (optional ``seed``)
 5  merge_branches     three-way merge of branches: snapshot, instance or sandbox ids (live ones
                       are snapshotted now); :class:`faasd.platform.merges.MergeService`
 6  start_instance     start a persistent instance
 7  stop_instance      stop it (files kept)
 8  pause_instance     freeze it
 9  resume_instance    thaw it
10  expose_port        host loopback port -> port inside the instance
11  upload_files       write files (base64) into the instance
==  =================  =======================================================================
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)
from sqlalchemy import select

from faasd.errors import FaasdError, InvalidInputError, NotFoundError
from faasd.platform.env import EnvVars, EnvVarsOrPairs
from faasd.platform.errors import UnavailableError
from faasd.platform.exec_ephemeral import ExecuteRequest, ExecuteService
from faasd.platform.instances import (
    ExecCommand,
    InstanceService,
    InstanceSpec,
    PortSpec,
    UploadedFile,
    instance_dict,
)
from faasd.platform.merges import MAX_BRANCHES, MergeService
from faasd.platform.snapshots import SnapshotService
from faasd.snapshots.seeds import SEED_MAX
from faasd.state import Database
from faasd.state.instance_models import Job
from faasd.state.models import iso, utcnow

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


def _recorded(args: dict[str, Any]) -> dict[str, Any]:
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


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "type": job.type,
        "type_name": job.type_name,
        "status": job.status,
        "args": job.args,
        "result": job.result,
        "error": job.error,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
    }


# ---------------------------------------------------------------------------------- service
class JobPlatform(Protocol):
    """What jobs use of the platform: :class:`~faasd.platform.core.Platform` satisfies it (read at each
    job, so a service the platform has not got is a clear ``unavailable`` error)."""

    @property
    def db(self) -> Database: ...

    @property
    def execute(self) -> ExecuteService | None: ...

    @property
    def instances(self) -> InstanceService | None: ...

    @property
    def snapshots(self) -> SnapshotService | None: ...


class JobService:
    def __init__(self, platform: JobPlatform, db: Database | None = None) -> None:
        self.platform = platform
        self.db = db or platform.db
        self._handlers: dict[str, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            "execute_function": self._execute_function,
            "execute_advanced": self._execute_advanced,
            "create_snapshot": self._create_snapshot,
            "restore_snapshot": self._restore_snapshot,
            "create_branch": self._create_branch,
            "merge_branches": self._merge_branches,
            "start_instance": self._start_instance,
            "stop_instance": self._stop_instance,
            "pause_instance": self._pause_instance,
            "resume_instance": self._resume_instance,
            "expose_port": self._expose_port,
            "upload_files": self._upload_files,
        }

    @property
    def instances(self) -> InstanceService:
        svc = self.platform.instances
        if svc is None:
            raise UnavailableError("this daemon runs without real sandboxes: instance jobs are unavailable")
        return svc

    def get(self, job_id: str) -> Job:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} does not exist", job=job_id)
            return job

    def list(self, limit: int = 50) -> list[Job]:
        with self.db.session() as s:
            return list(s.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit)))

    async def run(self, type_: int | str, args: dict[str, Any]) -> Job:
        """Validate, record, run and record the outcome. Argument errors are raised before recording;
        a job that fails while running is recorded as ``failed`` and its error re-raised."""
        number, name = job_type(type_)
        parsed = parse_args(name, args)
        job_id = "job_" + secrets.token_hex(10)
        with self.db.session() as s:
            s.add(Job(id=job_id, type=number, type_name=name, status="running", args=_recorded(args)))
        try:
            result = await self._handlers[name](parsed)
        except BaseException as exc:
            err = (
                exc.to_dict()
                if isinstance(exc, FaasdError)
                else {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            )
            with contextlib.suppress(Exception), self.db.session() as s:
                job = s.get(Job, job_id)
                if job is not None:
                    job.status, job.error, job.finished_at = "failed", err, utcnow()
            raise
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            job.status, job.result, job.finished_at = "succeeded", result, utcnow()
            return job

    # ------------------------------------------------------------------------------ handlers
    async def _execute_function(self, a: ExecuteFunctionArgs) -> dict[str, Any]:
        if self.platform.execute is None:
            raise UnavailableError("this daemon runs without an image store: execute is unavailable")
        req = ExecuteRequest(command=a.command, image=a.image, env_vars=a.env_vars)
        return await self.platform.execute.execute(req, stdin=a.payload_bytes())

    async def _execute_advanced(self, a: ExecuteAdvancedArgs) -> dict[str, Any]:
        if a.mode == "ephemeral":
            if self.platform.execute is None:
                raise UnavailableError("this daemon runs without an image store: execute is unavailable")
            req = ExecuteRequest(
                command=a.command,
                image=a.image,
                env_vars=a.env_vars,
                timeout_ms=int(a.timeout_secs * 1000),
            )
            result = await self.platform.execute.execute(req, stdin=a.payload_bytes())
            return {"mode": "ephemeral", **result}
        # restore / checkpoint: a temporary instance (from the snapshot, or the image), removed after
        svc = self.instances
        start = InstanceSpec(
            snapshot_id=a.snapshot, image=None if a.snapshot else a.image, env=dict(a.env_vars)
        )
        inst = await svc.create(start)
        try:
            result = await svc.exec(
                inst.id,
                ExecCommand(
                    args=["/bin/sh", "-c", a.command] if isinstance(a.command, str) else list(a.command),
                    stdin=a.payload_bytes() or b"",
                    timeout_s=a.timeout_secs,
                ),
            )
            out: dict[str, Any] = {"mode": a.mode, "restored_from": a.snapshot, **result}
            if a.mode == "checkpoint":
                snap = await svc.snapshot(inst.id, labels={"job": "execute_advanced"})
                out["snapshot_id"] = snap.id
            return out
        finally:
            await svc.delete(inst.id)

    async def _create_snapshot(self, a: CreateSnapshotArgs) -> dict[str, Any]:
        labels = {k: v for k, v in (("name", a.name), ("description", a.description)) if v}
        svc = self.instances
        inst_id = svc.find(a.container_id)
        if inst_id is None:
            other = self.platform.snapshots
            if other is None:
                raise NotFoundError(
                    f"{a.container_id!r} is not an instance (or an instance's sandbox) of this daemon",
                    container_id=a.container_id,
                )
            snap = await other.create(sandbox_id=a.container_id, labels=labels)
            return {"snapshot_id": snap.id, "container_id": a.container_id, "parent": snap.meta.parent}
        snap = await svc.snapshot(inst_id, labels=labels)
        return {
            "snapshot_id": snap.id,
            "container_id": inst_id,
            "parent": snap.meta.parent,
            "name": a.name,
            "description": a.description,
        }

    async def _restore_snapshot(self, a: RestoreSnapshotArgs) -> dict[str, Any]:
        inst = await self.instances.create(InstanceSpec(snapshot_id=a.snapshot_id, seed=a.seed))
        return {
            "instance": instance_dict(inst),
            "instance_id": inst.id,
            "snapshot_id": a.snapshot_id,
            "seed": a.seed,
        }

    async def _create_branch(self, a: CreateBranchArgs) -> dict[str, Any]:
        # a named instance restored from a snapshot (job 3 with a name): "branch" in the job's name only
        inst = await self.instances.create(
            InstanceSpec(snapshot_id=a.parent_snapshot_id, name=a.branch_name, seed=a.seed)
        )
        return {
            "branch_name": a.branch_name,
            "instance_id": inst.id,
            "parent_snapshot_id": a.parent_snapshot_id,
            "seed": a.seed,
            "instance": instance_dict(inst),
        }

    async def _merge_branches(self, a: MergeBranchesArgs) -> dict[str, Any]:
        if self.platform.snapshots is None:
            raise UnavailableError("this daemon runs without real sandboxes: merges are unavailable")
        merges = MergeService(self.platform.snapshots, self.platform.instances)
        result = await merges.merge(a.branch_ids, strategy=a.merge_strategy, labels={"job": "merge_branches"})
        return {
            "snapshot_id": result.snapshot.id,
            "base": result.base,
            "branches": result.branches,
            "strategy": a.merge_strategy,
            "report": result.report.to_dict(),
        }

    async def _start_instance(self, a: StartInstanceArgs) -> dict[str, Any]:
        return instance_dict(await self.instances.create(a.spec()))

    async def _stop_instance(self, a: InstanceArgs) -> dict[str, Any]:
        return instance_dict(await self.instances.stop(a.instance_id))

    async def _pause_instance(self, a: InstanceArgs) -> dict[str, Any]:
        return instance_dict(await self.instances.pause(a.instance_id))

    async def _resume_instance(self, a: InstanceArgs) -> dict[str, Any]:
        return instance_dict(await self.instances.resume(a.instance_id))

    async def _expose_port(self, a: ExposePortArgs) -> dict[str, Any]:
        req = PortSpec(internal_port=a.internal_port, protocol=a.protocol, subdomain=a.subdomain)
        return {"instance_id": a.instance_id, **await self.instances.expose(a.instance_id, req)}

    async def _upload_files(self, a: UploadFilesArgs) -> dict[str, Any]:
        if isinstance(a.files_data, str):
            result = await self.instances.upload_tar(a.instance_id, a.target_path, a.tar_bytes())
            return {"instance_id": a.instance_id, **result}
        files = [UploadedFile.from_base64(f.path, f.content, f.mode) for f in a.files_data]
        result = await self.instances.upload_files(a.instance_id, a.target_path, files)
        return {"instance_id": a.instance_id, **result}
