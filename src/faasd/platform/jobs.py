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

The argument models, :func:`job_type` and :func:`parse_args` are :mod:`faasd.platform.job_args`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select

from faasd.errors import FaasdError, NotFoundError
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
from faasd.platform.job_args import (
    ARG_MODELS,
    JOB_TYPES,
    CreateBranchArgs,
    CreateSnapshotArgs,
    ExecuteAdvancedArgs,
    ExecuteFunctionArgs,
    ExposePortArgs,
    FileArg,
    InstanceArgs,
    JobValidationError,
    MergeBranchesArgs,
    RestoreSnapshotArgs,
    StartInstanceArgs,
    UploadFilesArgs,
    job_type,
    parse_args,
    recorded_args,
)
from faasd.platform.merges import MergeService
from faasd.platform.namespaces import DEFAULT_NAMESPACE, NAMESPACE_LABEL
from faasd.platform.snapshots import SnapshotService
from faasd.platform.tenancy import Tenancy
from faasd.state import Database
from faasd.state.instance_models import Job
from faasd.state.models import iso, utcnow

__all__ = [
    "ARG_MODELS",
    "JOB_TYPES",
    "CreateBranchArgs",
    "CreateSnapshotArgs",
    "ExecuteAdvancedArgs",
    "ExecuteFunctionArgs",
    "ExposePortArgs",
    "FileArg",
    "InstanceArgs",
    "JobPlatform",
    "JobService",
    "JobValidationError",
    "MergeBranchesArgs",
    "RestoreSnapshotArgs",
    "StartInstanceArgs",
    "UploadFilesArgs",
    "job_dict",
    "job_type",
    "parse_args",
]


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "namespace": job.namespace,
        "type": job.type,
        "type_name": job.type_name,
        "status": job.status,
        "args": job.args,
        "result": job.result,
        "error": job.error,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
    }


_REF_ARGS = (
    "instance_id",
    "container_id",
    "snapshot_id",
    "checkpoint_id",
    "branch_from",
    "parent_snapshot_id",
    "branch_ids",
)
"""Job arguments that name an instance, sandbox or snapshot (checked against the job's namespace)."""


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

    @property
    def tenancy(self) -> Tenancy: ...


class JobService:
    def __init__(self, platform: JobPlatform, db: Database | None = None) -> None:
        self.platform = platform
        self.db = db or platform.db
        self._handlers: dict[str, Callable[[Any, str], Awaitable[dict[str, Any]]]] = {
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

    def list(self, limit: int = 50, namespace: str | None = None) -> list[Job]:
        """The newest jobs, of every namespace or of ``namespace``."""
        with self.db.session() as s:
            q = select(Job)
            if namespace is not None:
                q = q.where(Job.namespace == namespace)
            return list(s.scalars(q.order_by(Job.created_at.desc()).limit(limit)))

    def _check_refs(self, parsed: BaseModel, namespace: str) -> None:
        """Every instance, sandbox or snapshot a job names must be of the job's namespace: anything else
        is answered as absent (404; the job is recorded as failed, as for an id that does not exist)."""
        refs: list[str] = []
        for attr in _REF_ARGS:
            value = getattr(parsed, attr, None)
            if isinstance(value, str):
                refs.append(value)
            elif isinstance(value, list):
                refs.extend(v for v in value if isinstance(v, str))
        for ref in refs:
            if self.platform.tenancy.namespace_of(ref) != namespace:
                raise NotFoundError(f"{ref[:80]!r} does not exist", id=ref[:80])

    async def run(self, type_: int | str, args: dict[str, Any], namespace: str = DEFAULT_NAMESPACE) -> Job:
        """Validate, record, run and record the outcome. Argument errors are raised before recording;
        a job that fails while running is recorded as ``failed`` and its error re-raised. The job acts in
        ``namespace``: what it names must be of that namespace, what it creates belongs to it."""
        number, name = job_type(type_)
        parsed = parse_args(name, args)
        job_id = "job_" + secrets.token_hex(10)
        with self.db.session() as s:
            s.add(
                Job(
                    id=job_id,
                    namespace=namespace,
                    type=number,
                    type_name=name,
                    status="running",
                    args=recorded_args(args),
                )
            )
        try:
            self._check_refs(parsed, namespace)
            result = await self._handlers[name](parsed, namespace)
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
    async def _execute_function(self, a: ExecuteFunctionArgs, ns: str) -> dict[str, Any]:
        if self.platform.execute is None:
            raise UnavailableError("this daemon runs without an image store: execute is unavailable")
        req = ExecuteRequest(command=a.command, image=a.image, env_vars=a.env_vars)
        return await self.platform.execute.execute(req, stdin=a.payload_bytes())

    async def _execute_advanced(self, a: ExecuteAdvancedArgs, ns: str) -> dict[str, Any]:
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
        if a.mode == "checkpoint":
            self.platform.tenancy.check_new_snapshot(ns)
        inst = await svc.create(start, ns)
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
                snap = await svc.snapshot(inst.id, labels={"job": "execute_advanced", NAMESPACE_LABEL: ns})
                out["snapshot_id"] = snap.id
            return out
        finally:
            await svc.delete(inst.id)

    async def _create_snapshot(self, a: CreateSnapshotArgs, ns: str) -> dict[str, Any]:
        labels = {k: v for k, v in (("name", a.name), ("description", a.description)) if v}
        labels[NAMESPACE_LABEL] = ns
        self.platform.tenancy.check_new_snapshot(ns)
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

    async def _restore_snapshot(self, a: RestoreSnapshotArgs, ns: str) -> dict[str, Any]:
        inst = await self.instances.create(InstanceSpec(snapshot_id=a.snapshot_id, seed=a.seed), ns)
        return {
            "instance": instance_dict(inst),
            "instance_id": inst.id,
            "snapshot_id": a.snapshot_id,
            "seed": a.seed,
        }

    async def _create_branch(self, a: CreateBranchArgs, ns: str) -> dict[str, Any]:
        # a named instance restored from a snapshot (job 3 with a name): "branch" in the job's name only
        inst = await self.instances.create(
            InstanceSpec(snapshot_id=a.parent_snapshot_id, name=a.branch_name, seed=a.seed), ns
        )
        return {
            "branch_name": a.branch_name,
            "instance_id": inst.id,
            "parent_snapshot_id": a.parent_snapshot_id,
            "seed": a.seed,
            "instance": instance_dict(inst),
        }

    async def _merge_branches(self, a: MergeBranchesArgs, ns: str) -> dict[str, Any]:
        if self.platform.snapshots is None:
            raise UnavailableError("this daemon runs without real sandboxes: merges are unavailable")
        merges = MergeService(self.platform.snapshots, self.platform.instances)
        self.platform.tenancy.check_new_snapshot(ns)
        labels = {"job": "merge_branches", NAMESPACE_LABEL: ns}
        result = await merges.merge(a.branch_ids, strategy=a.merge_strategy, labels=labels)
        return {
            "snapshot_id": result.snapshot.id,
            "base": result.base,
            "branches": result.branches,
            "strategy": a.merge_strategy,
            "report": result.report.to_dict(),
        }

    async def _start_instance(self, a: StartInstanceArgs, ns: str) -> dict[str, Any]:
        return instance_dict(await self.instances.create(a.spec(), ns))

    async def _stop_instance(self, a: InstanceArgs, ns: str) -> dict[str, Any]:
        return instance_dict(await self.instances.stop(a.instance_id))

    async def _pause_instance(self, a: InstanceArgs, ns: str) -> dict[str, Any]:
        return instance_dict(await self.instances.pause(a.instance_id))

    async def _resume_instance(self, a: InstanceArgs, ns: str) -> dict[str, Any]:
        return instance_dict(await self.instances.resume(a.instance_id))

    async def _expose_port(self, a: ExposePortArgs, ns: str) -> dict[str, Any]:
        req = PortSpec(internal_port=a.internal_port, protocol=a.protocol, subdomain=a.subdomain)
        return {"instance_id": a.instance_id, **await self.instances.expose(a.instance_id, req)}

    async def _upload_files(self, a: UploadFilesArgs, ns: str) -> dict[str, Any]:
        if isinstance(a.files_data, str):
            result = await self.instances.upload_tar(a.instance_id, a.target_path, a.tar_bytes())
            return {"instance_id": a.instance_id, **result}
        files = [UploadedFile.from_base64(f.path, f.content, f.mode) for f in a.files_data]
        result = await self.instances.upload_files(a.instance_id, a.target_path, files)
        return {"instance_id": a.instance_id, **result}
