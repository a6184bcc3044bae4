"""Persistent instances: long-running sandboxes you exec into, copy files to and from, expose ports of.

An instance runs ``faasd-init`` (a reaping PID 1) in a sandbox on an image, or is restored from a
snapshot. Its filesystem survives :meth:`InstanceService.stop`: the overlay upper is stored as a
filesystem-only snapshot (parent: the snapshot the instance was layered on), and the next start
layers a fresh upper over that chain. ``pause``/``resume`` use the cgroup freezer. An instance with a
``ttl_s`` is paused automatically after that long without use and resumed on the next use (exec,
files, proxied connection). Exposed ports are host listeners on ``127.0.0.1`` that connect into the
sandbox's network namespace per connection (so a use resumes an auto-paused instance first).

Every stop adds one snapshot (one overlay lower) to the chain; once the chain is longer than
:data:`~faasd.snapshots.service.MAX_CHAIN_LENGTH` the stop flattens it (same files, one lower): the
stop snapshots above the snapshot the instance was started from are merged into one child of it (so
it stays a common base of the instance's snapshots), or, if that snapshot's own chain is longer than
half the bound, the whole chain is merged into one parentless snapshot. An instance's sandbox thus
has a bounded number of lowers however often it is stopped. Stop snapshots of the instance that
nothing references any more (no instance record, no function's ``branch_from``, no child snapshot --
e.g. a user's snapshot of the instance keeps its ancestors) are then deleted; ``gc`` frees their
blobs.

Instances do not survive a daemon restart as processes: at start-up instances whose sandbox is gone
become ``stopped`` (their files are those of the last stop).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import io
import logging
import posixpath
import secrets
import tarfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from faasd.config import Settings
from faasd.errors import (
    ConflictError,
    FaasdError,
    InvalidInputError,
    IsolationUnsupportedError,
    NotFoundError,
    pids_exhausted,
)
from faasd.platform.capacity import check_disk_limit
from faasd.platform.env import EnvVars
from faasd.platform.exec_ephemeral import EnsureImage, ImageStoreLike
from faasd.platform.functions import BRANCH_FROM_ANNOTATION
from faasd.runtime.agent_files import INIT_DIR_IN_CONTAINER, init_mount
from faasd.runtime.models import Limits, NetworkSpec, SandboxSpec
from faasd.runtime.proxy import pipe
from faasd.runtime.sandbox import Sandbox, SandboxManager
from faasd.snapshots.seeds import SEED_ENV, copy_seed
from faasd.snapshots.service import (
    MAX_CHAIN_LENGTH,
    flatten_snapshot,
    forget_sandbox,
    restore_snapshot,
    snapshot_lowers,
    snapshot_sandbox,
    snapshot_upper,
)
from faasd.snapshots.store import Snapshot, SnapshotMeta, SnapshotStore
from faasd.state import Database, Function
from faasd.state.instance_models import Instance
from faasd.state.models import iso, utcnow

log = logging.getLogger(__name__)

INIT_ARGS = [f"{INIT_DIR_IN_CONTAINER}/faasd-init"]
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
LABEL = "faasd.instance"
STOP_KIND = "instance-stop"
_ACTIVE = ("running", "paused")


# ------------------------------------------------------------------------------------ requests
class StartInstanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(default=None, max_length=512)
    snapshot_id: str | None = Field(default=None, max_length=64)
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
            self.image = "faasd/python:latest"
        if self.seed is not None and self.snapshot_id is None:
            raise ValueError("'seed' needs 'snapshot_id' (it seeds a copy restored from a snapshot)")
        return self


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


class ExposeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    internal_port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "tcp"] = "http"
    subdomain: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class UploadFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)
    content: str
    """base64 of the file's bytes."""
    mode: int = Field(default=0o644, ge=0, le=0o7777)


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target_path: str = Field(default="/", min_length=1, max_length=4096)
    files: list[UploadFile] = Field(min_length=1)


# ------------------------------------------------------------------------------ tar checking
def _norm_member(name: str) -> str:
    if name.startswith("/"):
        raise InvalidInputError(
            f"archive member {name!r} has an absolute path; use paths relative to the target"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInputError(
            f"archive member {name!r} contains '..'; it would escape the target directory"
        )
    return "/".join(parts)


def check_tar(data: bytes) -> int:
    """Validate an upload archive; returns the number of members.

    Rejected: absolute paths, ``..`` components, device nodes and fifos, symlinks or hard links whose
    target is absolute or leaves the target directory, and members written through a symlink of the same
    archive. (Extraction also happens *inside* the sandbox, so even an accepted archive can only touch
    the instance's own filesystem.)
    """
    links: set[str] = set()
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidInputError(f"upload body is not a valid tar archive: {exc}") from None
    for m in members:
        count += 1
        rel = _norm_member(m.name)
        parts = rel.split("/") if rel else []
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise InvalidInputError(
                    f"archive member {m.name!r} is written through a symlink of the archive"
                )
        if m.isdev() or m.isfifo():
            raise InvalidInputError(
                f"archive member {m.name!r} is a device or fifo; only files, dirs and links"
            )
        if m.issym() or m.islnk():
            target = m.linkname
            if target.startswith("/"):
                raise InvalidInputError(
                    f"archive member {m.name!r} links to the absolute path {target!r}; use relative links"
                )
            base = posixpath.dirname(rel) if m.issym() else ""
            resolved = posixpath.normpath(posixpath.join(base, target))
            if resolved == ".." or resolved.startswith("../"):
                raise InvalidInputError(
                    f"archive member {m.name!r} links to {target!r}, outside the target directory"
                )
            if m.issym():
                links.add(rel)
    return count


def files_to_tar(files: Sequence[UploadFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in files:
            rel = _norm_member(f.path)
            if not rel:
                raise InvalidInputError(f"file path {f.path!r} names no file")
            try:
                content = base64.b64decode(f.content, validate=True)
            except ValueError as exc:
                raise InvalidInputError(f"content of {f.path!r} is not valid base64: {exc}") from None
            info = tarfile.TarInfo(rel)
            info.size = len(content)
            info.mode = f.mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _abs_path(path: str, what: str) -> str:
    if not path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise InvalidInputError(f"{what} {path!r} must be an absolute path without '..'")
    return posixpath.normpath(path)


# ------------------------------------------------------------------------------------ service
@dataclass
class _Live:
    sandbox: Sandbox
    servers: dict[int, asyncio.Server] = field(default_factory=dict)
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _disk_mb(disk_gb: float) -> int:
    return max(16, int(disk_gb * 1024))


def instance_dict(inst: Instance) -> dict[str, Any]:
    return {
        "id": inst.id,
        "name": inst.name,
        "image": inst.image,
        "source_snapshot": inst.source_snapshot,
        "fs_snapshot": inst.fs_snapshot,
        "status": inst.status,
        "auto_paused": inst.auto_paused,
        "sandbox_id": inst.sandbox_id,
        "cpu_cores": inst.cpu_cores,
        "memory_mb": inst.memory_mb,
        "disk_gb": inst.disk_gb,
        "pids": inst.pids,
        "isolation": inst.isolation or "runc",
        "ttl_s": inst.ttl_s,
        "env": dict(inst.env or {}),
        "ports": list(inst.ports or []),
        "error": inst.error,
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
        "last_active_at": iso(inst.last_active_at),
    }


class InstanceService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        images: ImageStoreLike,
        manager: SandboxManager,
        snapshots: SnapshotStore | None = None,
        *,
        ttl_interval_s: float = 1.0,
        ensure_image: EnsureImage | None = None,
    ) -> None:
        self.ensure_image = ensure_image
        self.db = db
        self.settings = settings
        self.images = images
        self.manager = manager
        self._store = snapshots
        self.ttl_interval_s = ttl_interval_s
        self._live: dict[str, _Live] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ttl_task: asyncio.Task[None] | None = None

    @property
    def store(self) -> SnapshotStore:
        if self._store is None:
            self._store = SnapshotStore(self.settings)
        return self._store

    # -------------------------------------------------------------------------- db helpers
    def get(self, instance_id: str) -> Instance:
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None:
                raise NotFoundError(
                    f"instance {instance_id!r} does not exist; list instances to see ids",
                    instance=instance_id,
                )
            return inst

    def list(self) -> list[Instance]:
        with self.db.session() as s:
            return list(s.scalars(select(Instance).order_by(Instance.created_at)))

    def _update(self, instance_id: str, **values: Any) -> Instance:
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None:
                raise NotFoundError(f"instance {instance_id!r} does not exist")
            for k, v in values.items():
                setattr(inst, k, v)
            return inst

    def _lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    def sandbox_of(self, instance_id: str) -> Sandbox:
        live = self._live.get(instance_id)
        if live is None:
            inst = self.get(instance_id)
            raise ConflictError(
                f"instance {instance_id} is {inst.status}; start it first",
                instance=instance_id,
                status=inst.status,
            )
        return live.sandbox

    # ---------------------------------------------------------------------------- lifecycle
    async def create(self, req: StartInstanceRequest) -> Instance:
        if req.enable_ssh:
            raise InvalidInputError("ssh is not supported; use exec (POST /api/v1/instances/{id}/exec)")
        isolation = req.isolation or self.settings.isolation
        if req.snapshot_id is not None:
            snap = self.store.get(req.snapshot_id)  # 404 early
            if isolation == "gvisor" and "criu" in snap.trees:
                raise IsolationUnsupportedError(
                    f"snapshot {req.snapshot_id} holds a CRIU process image, which cannot be restored under "
                    "gVisor; start the instance with isolation 'runc', or from a filesystem-only snapshot",
                    isolation="gvisor",
                )
        check_disk_limit(self.settings, _disk_mb(req.disk_gb), "the instance")
        if req.image is not None:
            if self.ensure_image is not None:
                await self.ensure_image(req.image)
            self.images.get(req.image)
        inst_id = "in-" + secrets.token_hex(8)
        env = dict(req.env)
        if req.seed is not None:
            env[SEED_ENV] = copy_seed(req.seed, 0)
        with self.db.session() as s:
            s.add(
                Instance(
                    id=inst_id,
                    name=req.name,
                    image=req.image,
                    source_snapshot=req.snapshot_id,
                    fs_snapshot=req.snapshot_id,
                    status="starting",
                    cpu_cores=req.cpu_cores,
                    memory_mb=req.memory_mb,
                    disk_gb=req.disk_gb,
                    pids=req.pids,
                    isolation=isolation,
                    ttl_s=req.ttl_s,
                    env=env,
                    ports=[],
                )
            )
        try:
            return await self.start(inst_id)
        except BaseException:
            with self.db.session() as s:
                row = s.get(Instance, inst_id)
                if row is not None:
                    s.delete(row)
            raise

    def _limits(self, inst: Instance) -> Limits:
        disk_mb = _disk_mb(inst.disk_gb)
        return Limits(
            memory_mb=inst.memory_mb,
            cpu_cores=inst.cpu_cores,
            pids=inst.pids or 4096,
            disk_mb=disk_mb,
            tmp_mb=min(256, max(16, inst.memory_mb // 4)),
            timeout_s=None,
            nofile=4096,
            disk_backend="auto",  # tmpfs only when the disk fits well inside the memory limit
        )

    async def start(self, instance_id: str) -> Instance:
        """Start a stopped (or new) instance on its filesystem chain."""
        async with self._lock(instance_id):
            inst = self.get(instance_id)
            if instance_id in self._live:
                raise ConflictError(f"instance {instance_id} is already {inst.status}", instance=instance_id)
            sb_id = "fd-i" + secrets.token_hex(8)
            limits = self._limits(inst)
            try:
                sb = await self._boot(inst, sb_id, limits)
            except FaasdError as exc:
                self._update(
                    instance_id, status="error" if inst.status == "starting" else "stopped", error=exc.message
                )
                raise
            live = _Live(sb)
            self._live[instance_id] = live
            ports = []
            for p in inst.ports or []:
                try:
                    ports.append(await self._listen(instance_id, live, dict(p), p.get("host_port")))
                except OSError:
                    ports.append(await self._listen(instance_id, live, dict(p), None))
            return self._update(
                instance_id,
                status="running",
                auto_paused=False,
                sandbox_id=sb.id,
                error=None,
                ports=ports,
                last_active_at=utcnow(),
            )

    async def _boot(self, inst: Instance, sb_id: str, limits: Limits) -> Sandbox:
        base = inst.fs_snapshot
        gvisor = inst.isolation == "gvisor"
        image = self.images.get(inst.image) if inst.image else None
        if base is not None:
            snap = await asyncio.to_thread(self.store.get, base)
            if "criu" in snap.trees and base == inst.source_snapshot:
                restored = await restore_snapshot(
                    self.store, base, sb_id, manager=self.manager, limits=limits, notify_agent=False
                )
                return restored.sandbox
            lowers = await asyncio.to_thread(snapshot_lowers, self.store, base)
            for link in await asyncio.to_thread(self.store.chain, base):
                await asyncio.to_thread(self.store.lease, link.id, self.manager.sandboxes_dir / sb_id)
            if image is None and snap.meta.image_ref:
                with contextlib.suppress(NotFoundError):
                    image = self.images.get(snap.meta.image_ref)
        else:
            assert image is not None
            lowers = self.images.layer_dirs(image)
        mount = await asyncio.to_thread(init_mount, self.settings)
        spec = SandboxSpec(
            id=sb_id,
            lowers=list(lowers),
            args=list(INIT_ARGS),
            image_config=image.config if image is not None else None,
            env=dict(inst.env or {}),
            limits=limits,
            network=NetworkSpec(mode="none" if gvisor else "loopback-proxy"),
            mounts=[mount],
            hostname=inst.id,
            annotations={LABEL: inst.id},
            runtime="runsc" if gvisor else "runc",
        )
        return await self.manager.start_new(spec)

    async def stop(self, instance_id: str, *, keep_files: bool = True) -> Instance:
        """Destroy the sandbox; its filesystem changes are kept as a snapshot for the next start."""
        async with self._lock(instance_id):
            inst = self.get(instance_id)
            live = self._live.pop(instance_id, None)
            if live is None:
                if inst.status in _ACTIVE or inst.status == "starting":
                    return self._update(instance_id, status="stopped", sandbox_id=None)
                return inst
            new_base = inst.fs_snapshot
            try:
                for srv in live.servers.values():
                    srv.close()
                sb = live.sandbox
                await sb.kill()
                with contextlib.suppress(FaasdError):
                    await sb.wait(10.0)
                upper = sb.rootfs.upper if sb.rootfs is not None else None
                if keep_files and upper is not None and any(upper.iterdir()):
                    meta = SnapshotMeta(
                        source_sandbox=sb.id,
                        image_ref=inst.image,
                        layers=[] if inst.fs_snapshot else [str(p) for p in sb.spec.lowers],
                        limits={},
                        parent=inst.fs_snapshot,
                        labels={LABEL: inst.id, "kind": STOP_KIND},
                    )
                    # a child of the instance's newest snapshot if it was snapshotted while running
                    snap = await asyncio.to_thread(
                        snapshot_upper, self.store, sb.id, list(sb.spec.lowers), upper, meta
                    )
                    new_base = snap.id
            finally:
                await live.sandbox.destroy()
                forget_sandbox(self.store, live.sandbox.id)
            flattened = False
            if new_base is not None and new_base != inst.fs_snapshot:
                top = new_base
                new_base = await self._bound_chain(inst, new_base)
                flattened = new_base != top
            inst = self._update(
                instance_id, status="stopped", auto_paused=False, sandbox_id=None, fs_snapshot=new_base
            )
            if flattened:
                await self._drop_unused_stop_snapshots(instance_id)
            return inst

    async def _bound_chain(self, inst: Instance, top: str) -> str:
        """``top``, or a flattened copy of it when its chain is longer than ``MAX_CHAIN_LENGTH``.

        A failed flattening is logged and leaves the (correct, only longer) chain: the next stop
        tries again."""
        chain = await asyncio.to_thread(self.store.chain, top)
        if len(chain) <= MAX_CHAIN_LENGTH:
            return top
        ids = [s.id for s in chain]
        # keep the snapshot the instance was started from as the parent (a common base for merges of
        # its branches) when its own chain is short; otherwise flatten everything
        onto = inst.source_snapshot
        if onto not in ids[:-1] or ids.index(onto) + 1 > MAX_CHAIN_LENGTH // 2:
            onto = None
        tip = chain[-1]
        meta = SnapshotMeta(
            source_sandbox=tip.meta.source_sandbox,
            image_ref=tip.meta.image_ref or inst.image,
            limits={},
            labels={LABEL: inst.id, "kind": STOP_KIND},
        )
        try:
            flat = await asyncio.to_thread(flatten_snapshot, self.store, top, meta, onto=onto)
        except (FaasdError, OSError) as exc:
            log.warning(
                "flattening the %d snapshots of instance %s failed (kept): %s", len(chain), inst.id, exc
            )
            return top
        log.info("instance %s: flattened a chain of %d snapshots into %s", inst.id, len(chain), flat.id)
        return flat.id

    def _snapshot_refs(self) -> set[str]:
        """Snapshot ids instance records and functions' ``branch_from`` name."""
        refs: set[str] = set()
        with self.db.session() as s:
            for row in s.scalars(select(Instance)):
                refs.update(x for x in (row.source_snapshot, row.fs_snapshot) if x)
            for fn in s.scalars(select(Function)):
                ref = (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION)
                if ref:
                    refs.add(str(ref))
        return refs

    async def _drop_unused_stop_snapshots(self, instance_id: str) -> builtins.list[str]:
        """Delete the stop snapshots of ``instance_id`` that nothing references (see
        :meth:`_delete_unreferenced`). Returns the ids deleted."""
        refs = self._snapshot_refs()
        return await asyncio.to_thread(self._delete_unreferenced, instance_id, refs)

    def _delete_unreferenced(self, instance_id: str, refs: set[str]) -> builtins.list[str]:
        """Delete the stop snapshots of ``instance_id`` that are not in ``refs``, not an ancestor of one
        and have no child (leaves first, so a chain goes link by link). Blocking (store I/O)."""
        deleted: builtins.list[str] = []
        try:
            referenced: set[str] = set()
            for ref in refs:
                referenced.add(ref)
                with contextlib.suppress(FaasdError):
                    referenced.update(s.id for s in self.store.chain(ref))
            while True:
                progress = False
                for snap in self.store.list():
                    labels = snap.meta.labels
                    if labels.get(LABEL) != instance_id or labels.get("kind") != STOP_KIND:
                        continue
                    if snap.id in referenced:
                        continue
                    try:
                        self.store.delete(snap.id)
                    except (ConflictError, NotFoundError):
                        continue
                    deleted.append(snap.id)
                    progress = True
                if not progress:
                    return deleted
        except FaasdError as exc:
            log.warning("dropping old snapshots of instance %s failed: %s", instance_id, exc)
            return deleted

    async def pause(self, instance_id: str, *, auto: bool = False) -> Instance:
        async with self._lock(instance_id):
            inst = self.get(instance_id)
            live = self._live.get(instance_id)
            if live is None or inst.status != "running":
                raise ConflictError(
                    f"instance {instance_id} is {inst.status}; only a running instance can be paused"
                )
            await live.sandbox.pause()
            return self._update(instance_id, status="paused", auto_paused=auto)

    async def resume(self, instance_id: str) -> Instance:
        async with self._lock(instance_id):
            inst = self.get(instance_id)
            live = self._live.get(instance_id)
            if live is None or inst.status != "paused":
                raise ConflictError(
                    f"instance {instance_id} is {inst.status}; only a paused instance can be resumed"
                )
            await live.sandbox.resume()
            live.last_used = time.monotonic()
            return self._update(instance_id, status="running", auto_paused=False, last_active_at=utcnow())

    async def delete(self, instance_id: str) -> None:
        self.get(instance_id)
        await self.stop(instance_id, keep_files=False)
        with self.db.session() as s:
            row = s.get(Instance, instance_id)
            if row is not None:
                s.delete(row)
        self._locks.pop(instance_id, None)
        # drop the snapshots its stops created; keep any another snapshot, instance or function uses
        await self._drop_unused_stop_snapshots(instance_id)

    # --------------------------------------------------------------------------- use / ttl
    @contextlib.asynccontextmanager
    async def use(self, instance_id: str) -> AsyncIterator[Sandbox]:
        """The running sandbox of an instance for one operation: resumes an auto-paused instance,
        keeps the TTL from pausing it while in use."""
        inst = self.get(instance_id)
        live = self._live.get(instance_id)
        if live is None:
            raise ConflictError(
                f"instance {instance_id} is {inst.status}; start it first "
                f"(POST /api/v1/instances/{instance_id}/start)",
                instance=instance_id,
                status=inst.status,
            )
        live.busy += 1
        try:
            if inst.status == "paused":
                if not inst.auto_paused:
                    raise ConflictError(
                        f"instance {instance_id} is paused; resume it first",
                        instance=instance_id,
                        status="paused",
                    )
                async with self._lock(instance_id):
                    cur = self.get(instance_id)
                    if cur.status == "paused" and cur.auto_paused:
                        await live.sandbox.resume()
                        self._update(instance_id, status="running", auto_paused=False)
            live.last_used = time.monotonic()
            yield live.sandbox
        finally:
            live.busy -= 1
            live.last_used = time.monotonic()
            with contextlib.suppress(FaasdError):
                self._update(instance_id, last_active_at=utcnow())

    async def check_ttl(self) -> builtins.list[str]:
        """Pause running instances idle for longer than their TTL; returns the ids paused."""
        paused: builtins.list[str] = []
        now = time.monotonic()
        for inst_id, live in list(self._live.items()):
            if live.busy:
                continue
            try:
                inst = self.get(inst_id)
            except NotFoundError:
                continue
            if inst.status != "running" or inst.ttl_s is None or now - live.last_used < inst.ttl_s:
                continue
            try:
                await self.pause(inst_id, auto=True)
                paused.append(inst_id)
                log.info("instance %s idle for %.1f s: paused (ttl)", inst_id, now - live.last_used)
            except FaasdError as exc:
                log.warning("auto-pausing instance %s failed: %s", inst_id, exc.message)
        return paused

    async def _ttl_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_interval_s)
            try:
                await self.check_ttl()
            except Exception:
                log.exception("instance ttl check failed")

    def start_background(self) -> None:
        if self._ttl_task is None:
            self._ttl_task = asyncio.create_task(self._ttl_loop(), name="instance-ttl")

    def reconcile(self) -> builtins.list[str]:
        """At daemon start: instances whose sandbox is gone become ``stopped``."""
        fixed: builtins.list[str] = []
        with self.db.session() as s:
            for inst in s.scalars(
                select(Instance).where(Instance.status.in_(["starting", "running", "paused"]))
            ):
                if inst.id in self._live:
                    continue
                inst.status = "stopped"
                inst.sandbox_id = None
                inst.auto_paused = False
                inst.error = "the daemon restarted; changes since the last stop were lost"
                fixed.append(inst.id)
        return fixed

    async def close(self) -> None:
        """Stop every running instance (files kept) and the TTL loop."""
        if self._ttl_task is not None:
            self._ttl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ttl_task
            self._ttl_task = None
        for inst_id in list(self._live):
            try:
                await self.stop(inst_id)
            except Exception:
                log.exception("stopping instance %s at shutdown failed", inst_id)
                live = self._live.pop(inst_id, None)
                if live is not None:
                    with contextlib.suppress(Exception):
                        await live.sandbox.destroy()

    # ----------------------------------------------------------------------------- operations
    async def exec(self, instance_id: str, req: ExecRequest) -> dict[str, Any]:
        if req.cwd is not None:
            _abs_path(req.cwd, "cwd")
        inst = self.get(instance_id)
        env = {**(inst.env or {}), **req.env}
        async with self.use(instance_id) as sb:
            started = time.perf_counter()
            res = await sb.exec(
                req.args(), stdin=req.stdin_bytes(), timeout=req.timeout_s, env=env, cwd=req.cwd,
                output_limit=MAX_OUTPUT_BYTES, watch_pids=True,
            )
        if res.pids_exhausted:
            raise pids_exhausted(
                sb.spec.limits.pids,
                "the exec's process group (the instance keeps running)",
                instance=instance_id,
                detected_ms=res.pids_detected_ms,
                stdout=res.stdout[-8192:].decode("utf-8", "replace"),
                stderr=res.stderr[-8192:].decode("utf-8", "replace"),
            )
        return {
            "exit_code": res.exit_code,
            "stdout": res.stdout.decode("utf-8", "replace"),
            "stderr": res.stderr.decode("utf-8", "replace"),
            "stdout_truncated": res.stdout_truncated,
            "stderr_truncated": res.stderr_truncated,
            "timed_out": res.timed_out,
            "oom_killed": res.oom_killed,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def upload_tar(self, instance_id: str, target_path: str, data: bytes) -> dict[str, Any]:
        """Extract a (validated) tar archive under ``target_path`` *inside* the instance."""
        target = _abs_path(target_path, "target_path")
        count = check_tar(data)
        script = 'mkdir -p -- "$1" && exec tar -x -f - -C "$1" --no-same-owner --no-overwrite-dir'
        async with self.use(instance_id) as sb:
            res = await sb.exec(["/bin/sh", "-c", script, "sh", target], stdin=data, timeout=300)
        if res.exit_code != 0:
            raise InvalidInputError(
                f"extracting the upload into {target} failed (exit {res.exit_code}): "
                f"{res.stderr.decode('utf-8', 'replace').strip()[-2000:]}",
                exit_code=res.exit_code,
            )
        return {"target_path": target, "files": count, "bytes": len(data)}

    async def upload_files(self, instance_id: str, req: UploadRequest) -> dict[str, Any]:
        return await self.upload_tar(instance_id, req.target_path, files_to_tar(req.files))

    async def download(self, instance_id: str, path: str) -> bytes:
        """A tar archive of ``path`` (file or directory) inside the instance; members are named by
        the path's last component."""
        p = _abs_path(path, "path")
        parent, name = posixpath.split(p)
        if not name:
            parent, name = "/", "."
        async with self.use(instance_id) as sb:
            res = await sb.exec(["tar", "-c", "-f", "-", "-C", parent or "/", "--", name], timeout=300)
        if res.exit_code != 0:
            msg = res.stderr.decode("utf-8", "replace").strip()[-2000:]
            if "No such file" in msg or "Cannot stat" in msg:
                raise NotFoundError(f"{p} does not exist in instance {instance_id}", path=p)
            raise InvalidInputError(f"archiving {p} failed (exit {res.exit_code}): {msg}")
        if len(res.stdout) > MAX_DOWNLOAD_BYTES:
            raise InvalidInputError(f"{p} is larger than {MAX_DOWNLOAD_BYTES} bytes as a tar; download less")
        return res.stdout

    # ------------------------------------------------------------------------------ snapshots
    def find(self, ref: str) -> str | None:
        """The instance id for an instance id or the id of an instance's current sandbox."""
        with self.db.session() as s:
            if s.get(Instance, ref) is not None:
                return ref
            row = s.scalars(select(Instance).where(Instance.sandbox_id == ref)).first()
            return row.id if row is not None else None

    async def snapshot(self, instance_id: str, labels: dict[str, str] | None = None) -> Snapshot:
        """CRIU snapshot (processes + filesystem) of a running instance; it keeps running. The snapshot
        becomes the instance's new base: its next snapshot (or stop) is a child of it."""
        inst = self.get(instance_id)
        async with self.use(instance_id) as sb:
            meta = SnapshotMeta(image_ref=inst.image, labels={LABEL: inst.id, **(labels or {})})
            return await snapshot_sandbox(self.store, sb, meta)

    # ---------------------------------------------------------------------------------- ports
    async def expose(self, instance_id: str, req: ExposeRequest) -> dict[str, Any]:
        async with self._lock(instance_id):
            inst = self.get(instance_id)
            live = self._live.get(instance_id)
            if live is None:
                raise ConflictError(f"instance {instance_id} is {inst.status}; start it first")
            ports = [dict(p) for p in inst.ports or []]
            for p in ports:
                if p["internal_port"] == req.internal_port and req.internal_port in live.servers:
                    return p
            if inst.isolation == "gvisor":
                raise IsolationUnsupportedError(
                    f"instance {instance_id} runs under gVisor, whose own network stack the host cannot "
                    "connect into: ports cannot be exposed; use exec, or an instance with isolation 'runc'",
                    isolation="gvisor",
                )
            entry = {"internal_port": req.internal_port, "protocol": req.protocol, "subdomain": req.subdomain}
            entry = await self._listen(instance_id, live, entry, None)
            ports = [p for p in ports if p["internal_port"] != req.internal_port] + [entry]
            self._update(instance_id, ports=ports)
            return entry

    def host_port(self, instance_id: str, internal_port: int) -> int:
        inst = self.get(instance_id)
        for p in inst.ports or []:
            if p["internal_port"] == internal_port and p.get("host_port"):
                live = self._live.get(instance_id)
                if live is None:
                    raise ConflictError(f"instance {instance_id} is {inst.status}; start it first")
                return int(p["host_port"])
        raise NotFoundError(
            f"port {internal_port} of instance {instance_id} is not exposed; "
            f"POST /api/v1/instances/{instance_id}/ports first",
            port=internal_port,
        )

    async def _listen(
        self, instance_id: str, live: _Live, entry: dict[str, Any], host_port: int | None
    ) -> dict[str, Any]:
        port = int(entry["internal_port"])

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                async with self.use(instance_id) as sb:
                    up_r, up_w = await sb.open_connection(port)
                    try:
                        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
                    finally:
                        up_w.close()
            except Exception as exc:  # a client of the proxy: log, never crash the listener
                log.debug("proxy connection to %s:%d failed: %s", instance_id, port, exc)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", host_port or 0)
        bound = server.sockets[0].getsockname()[1]
        live.servers[port] = server
        scheme = "http" if entry.get("protocol", "http") == "http" else "tcp"
        return {**entry, "host_port": bound, "url": f"{scheme}://127.0.0.1:{bound}"}


def tar_members(data: bytes) -> list[str]:
    """Names in a tar archive (helper for clients and tests)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return tar.getnames()
