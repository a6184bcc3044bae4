"""The instance service: lifecycle of persistent instances (create, start, stop, pause, resume, delete).

:class:`InstanceService` is the one object the platform, API, jobs and console use. The other ideas
live next to it: records, locks and :meth:`~InstanceRegistry.use` in :mod:`.registry`, exec and files in
:mod:`.files`, port listeners in :mod:`.ports`, chain bounding and stop-snapshot GC in :mod:`.chain`, the
idle TTL in :mod:`.ttl`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select

from faasd.config import Settings
from faasd.errors import (
    ConflictError,
    FaasdError,
    InvalidInputError,
    NotFoundError,
)
from faasd.platform.capacity import check_disk_limit
from faasd.platform.exec_ephemeral import EnsureImage, ImageStoreLike
from faasd.platform.instances import adoption, files, ports
from faasd.platform.instances.chain import LABEL, STOP_KIND, bound_chain, drop_unused_stop_snapshots
from faasd.platform.instances.gvisor_snapshots import snapshot_and_continue
from faasd.platform.instances.registry import InstanceRegistry, LiveInstance
from faasd.platform.instances.specs import ExecCommand, InstanceSpec, PortSpec, UploadedFile
from faasd.platform.instances.ttl import pause_idle
from faasd.platform.namespaces import DEFAULT_NAMESPACE, NAMESPACE_LABEL
from faasd.runtime.agent_files import INIT_DIR_IN_CONTAINER, init_mount
from faasd.runtime.gvisor_checkpoint import check_restore_isolation
from faasd.runtime.models import Limits, NetworkSpec, SandboxSpec
from faasd.runtime.sandbox import Sandbox, SandboxManager
from faasd.snapshots.seeds import SEED_ENV, copy_seed
from faasd.snapshots.service import (
    forget_sandbox,
    restore_snapshot,
    snapshot_isolation,
    snapshot_lowers,
    snapshot_sandbox,
    snapshot_upper,
)
from faasd.snapshots.store import Snapshot, SnapshotMeta, SnapshotStore
from faasd.state import Database
from faasd.state.instance_models import Instance
from faasd.state.models import utcnow

log = logging.getLogger(__name__)

INIT_ARGS = [f"{INIT_DIR_IN_CONTAINER}/faasd-init"]
_ACTIVE = ("running", "paused")


def _disk_mb(disk_gb: float) -> int:
    return max(16, int(disk_gb * 1024))


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
        self.registry = InstanceRegistry(db)
        self._ttl_task: asyncio.Task[None] | None = None
        self.admit: Callable[[Instance], contextlib.AbstractContextManager[None]] | None = None
        """Held around every start of an instance's sandbox: raises when its namespace's quotas do not
        allow one more (set by the platform: :meth:`faasd.platform.tenancy.Tenancy.instance_start`)."""

    @property
    def store(self) -> SnapshotStore:
        if self._store is None:
            self._store = SnapshotStore(self.settings)
        return self._store

    # ------------------------------------------------------------------------------ records
    def get(self, instance_id: str) -> Instance:
        return self.registry.get(instance_id)

    def list(self, namespace: str | None = None) -> builtins.list[Instance]:
        """Every instance, or those of ``namespace``."""
        return [i for i in self.registry.list() if namespace is None or i.namespace == namespace]

    def find(self, ref: str) -> str | None:
        """The instance id for an instance id or the id of an instance's current sandbox."""
        return self.registry.find(ref)

    def sandbox_of(self, instance_id: str) -> Sandbox:
        return self.registry.sandbox_of(instance_id)

    def use(self, instance_id: str) -> contextlib.AbstractAsyncContextManager[Sandbox]:
        """The running sandbox of an instance for one operation (see :meth:`InstanceRegistry.use`)."""
        return self.registry.use(instance_id)

    # ---------------------------------------------------------------------------- lifecycle
    async def create(self, req: InstanceSpec, namespace: str = DEFAULT_NAMESPACE) -> Instance:
        """A new instance of ``namespace`` (a ``snapshot_id`` must be one the caller may see: the API
        checks that), started at once."""
        if req.enable_ssh:
            raise InvalidInputError("ssh is not supported; use exec (POST /api/v1/instances/{id}/exec)")
        isolation = req.isolation or self.settings.isolation
        if req.snapshot_id is not None:
            snap = self.store.get(req.snapshot_id)  # 404 early
            if "criu" in snap.trees:
                # a process image restores only under the backend that captured it
                kind = snapshot_isolation(snap)
                isolation = req.isolation or kind
                check_restore_isolation(kind, isolation, f"snapshot {req.snapshot_id}")
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
                    namespace=namespace,
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
        async with self.registry.lock(instance_id):
            inst = self.get(instance_id)
            if instance_id in self.registry.live:
                raise ConflictError(f"instance {instance_id} is already {inst.status}", instance=instance_id)
            sb_id = "fd-i" + secrets.token_hex(8)
            limits = self._limits(inst)
            # a quota refusal leaves the instance as it was; the reservation lasts until it counts as running
            with self.admit(inst) if self.admit is not None else contextlib.nullcontext():
                try:
                    sb = await self._boot(inst, sb_id, limits)
                except FaasdError as exc:
                    self.registry.update(
                        instance_id,
                        status="error" if inst.status == "starting" else "stopped",
                        error=exc.message,
                    )
                    raise
                adoption.mark_adoptable(sb, instance_id)  # from now on it outlives this daemon
                live = LiveInstance(sb)
                self.registry.live[instance_id] = live
                exposed = await ports.reopen(self.registry, instance_id, live, list(inst.ports or []))
                return self.registry.update(
                    instance_id,
                    status="running",
                    auto_paused=False,
                    sandbox_id=sb.id,
                    error=None,
                    ports=exposed,
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
                    self.store, base, sb_id, manager=self.manager, limits=limits, notify_agent=False,
                    isolation="gvisor" if gvisor else "runc",
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
        async with self.registry.lock(instance_id):
            inst = self.get(instance_id)
            live = self.registry.live.pop(instance_id, None)
            if live is None:
                if inst.status in _ACTIVE or inst.status == "starting":
                    return self.registry.update(instance_id, status="stopped", sandbox_id=None)
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
                        labels={LABEL: inst.id, "kind": STOP_KIND, NAMESPACE_LABEL: inst.namespace},
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
                new_base = await bound_chain(self.store, inst, new_base)
                flattened = new_base != top
            inst = self.registry.update(
                instance_id, status="stopped", auto_paused=False, sandbox_id=None, fs_snapshot=new_base
            )
            if flattened:
                await drop_unused_stop_snapshots(self.db, self.store, instance_id)
            return inst

    async def pause(self, instance_id: str, *, auto: bool = False) -> Instance:
        async with self.registry.lock(instance_id):
            inst = self.get(instance_id)
            live = self.registry.live.get(instance_id)
            if live is None or inst.status != "running":
                raise ConflictError(
                    f"instance {instance_id} is {inst.status}; only a running instance can be paused"
                )
            await live.sandbox.pause()
            return self.registry.update(instance_id, status="paused", auto_paused=auto)

    async def resume(self, instance_id: str) -> Instance:
        async with self.registry.lock(instance_id):
            inst = self.get(instance_id)
            live = self.registry.live.get(instance_id)
            if live is None or inst.status != "paused":
                raise ConflictError(
                    f"instance {instance_id} is {inst.status}; only a paused instance can be resumed"
                )
            await live.sandbox.resume()
            live.last_used = time.monotonic()
            return self.registry.update(
                instance_id, status="running", auto_paused=False, last_active_at=utcnow()
            )

    async def delete(self, instance_id: str) -> None:
        self.get(instance_id)
        await self.stop(instance_id, keep_files=False)
        with self.db.session() as s:
            row = s.get(Instance, instance_id)
            if row is not None:
                s.delete(row)
        self.registry.forget_lock(instance_id)
        # drop the snapshots its stops created; keep any another snapshot, instance or function uses
        await drop_unused_stop_snapshots(self.db, self.store, instance_id)

    # ----------------------------------------------------------------------------------- ttl
    async def check_ttl(self) -> builtins.list[str]:
        """Pause running instances idle for longer than their TTL; returns the ids paused."""
        return await pause_idle(self.registry, lambda inst_id: self.pause(inst_id, auto=True))

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

    async def adopt(self, *, skip_names: tuple[str, ...] = ()) -> adoption.InstanceAdoption:
        """At daemon start, before orphans are removed: re-adopt the instances whose sandbox still runs,
        keep the files of those whose sandbox exited meanwhile (see :mod:`.adoption`). Instances named
        with a prefix in ``skip_names`` are left to :meth:`reconcile`."""
        disks = adoption.ScratchDisks(
            self.settings.data_dir / "scratch", self.settings.run_dir,
            lambda ref: list(self.images.layer_dirs(self.images.get(ref))),
        )
        return await adoption.adopt_instances(
            self.registry, self.manager, self.store, skip_names=skip_names, disks=disks
        )

    async def release(self) -> builtins.list[str]:
        """At a clean shutdown that keeps sandboxes running: let go of every running instance without
        stopping it (the next daemon re-adopts it). Returns the sandbox ids left running."""
        return await adoption.release_instances(self.registry)

    def reconcile(self) -> builtins.list[str]:
        """At daemon start, after :meth:`adopt`: instances still shown active whose sandbox was not
        re-adopted become ``stopped``."""
        fixed: builtins.list[str] = []
        with self.db.session() as s:
            for inst in s.scalars(
                select(Instance).where(Instance.status.in_(["starting", "running", "paused"]))
            ):
                if inst.id in self.registry.live:
                    continue
                inst.status = "stopped"
                inst.sandbox_id = None
                inst.auto_paused = False
                inst.error = (
                    "the daemon restarted and did not re-adopt its sandbox; "
                    "changes since the last stop were lost"
                )
                fixed.append(inst.id)
        return fixed

    async def close(self) -> None:
        """Stop every running instance (files kept) and the TTL loop."""
        if self._ttl_task is not None:
            self._ttl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ttl_task
            self._ttl_task = None
        for inst_id in list(self.registry.live):
            try:
                await self.stop(inst_id)
            except Exception:
                log.exception("stopping instance %s at shutdown failed", inst_id)
                live = self.registry.live.pop(inst_id, None)
                if live is not None:
                    with contextlib.suppress(Exception):
                        await live.sandbox.destroy()

    # -------------------------------------------------------------------- exec, files, ports
    async def exec(self, instance_id: str, cmd: ExecCommand) -> dict[str, Any]:
        return await files.exec_in(self.registry, instance_id, cmd)

    async def upload_tar(self, instance_id: str, target_path: str, data: bytes) -> dict[str, Any]:
        """Extract a (validated) tar archive under ``target_path`` *inside* the instance."""
        return await files.upload_tar(self.registry, instance_id, target_path, data)

    async def upload_files(
        self, instance_id: str, target_path: str, uploads: Sequence[UploadedFile]
    ) -> dict[str, Any]:
        """Write ``uploads`` (paths relative to ``target_path``) into the instance."""
        return await files.upload_files(self.registry, instance_id, target_path, uploads)

    async def download(self, instance_id: str, path: str) -> bytes:
        """A tar archive of ``path`` (file or directory) inside the instance."""
        return await files.download(self.registry, instance_id, path)

    async def expose(self, instance_id: str, req: PortSpec) -> dict[str, Any]:
        return await ports.expose(self.registry, instance_id, req)

    def host_port(self, instance_id: str, internal_port: int) -> int:
        return ports.host_port(self.registry, instance_id, internal_port)

    # ------------------------------------------------------------------------------ snapshots
    async def snapshot(self, instance_id: str, labels: dict[str, str] | None = None) -> Snapshot:
        """Snapshot (processes + filesystem) of a running instance; it keeps running. The snapshot
        becomes the instance's new base: its next snapshot (or stop) is a child of it. Under gVisor the
        instance continues in a sandbox restored from the snapshot (:mod:`.gvisor_snapshots`)."""
        inst = self.get(instance_id)
        meta = SnapshotMeta(
            image_ref=inst.image, labels={LABEL: inst.id, **(labels or {}), NAMESPACE_LABEL: inst.namespace}
        )
        if inst.isolation == "gvisor":
            return await snapshot_and_continue(
                self.registry, self.store, self.manager, instance_id, meta, self._limits(inst)
            )
        async with self.use(instance_id) as sb:
            return await snapshot_sandbox(self.store, sb, meta)
