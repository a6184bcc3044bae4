"""The platform: every service wired together, plus start-up reconciliation and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from faasd.config import Settings
from faasd.errors import FaasdError, InvalidInputError, NotFoundError
from faasd.images.store import ImageStore
from faasd.platform.addresses import DirectAddresses
from faasd.platform.adoption import AdoptionReport, adopt_all, release_all
from faasd.platform.capacity import check_disk_limit
from faasd.platform.exec_ephemeral import ExecuteService, ImageStoreLike, SandboxRunner
from faasd.platform.exec_pool import WarmExecPool
from faasd.platform.executions import ExecutionService, ReconcileReport
from faasd.platform.functions import FunctionService, FunctionSpec, function_dict
from faasd.platform.instances import InstanceService
from faasd.platform.jobs import JobService
from faasd.platform.keys import ApiKeyService, RateLimiter
from faasd.platform.logs import LogService
from faasd.platform.metrics import Metrics
from faasd.platform.namespaces import DEFAULT_NAMESPACE, Access, NamespaceService
from faasd.platform.pulls import ImageEnsurer
from faasd.platform.quotas import Usage
from faasd.platform.runner import POOLED_MODES, FunctionRunner
from faasd.platform.secrets import SecretService
from faasd.platform.seed_execute import WORKSPACE_PREFIX, SeedExecuteService
from faasd.platform.snapshots import SnapshotService
from faasd.platform.source_deploy import SOURCE_REF_PREFIX
from faasd.platform.spares import Spares
from faasd.platform.tenancy import Tenancy
from faasd.platform.worker_protocol import PreparingFactory, WorkerFactory
from faasd.runtime.gateway_channel import GatewayRegistry
from faasd.runtime.sandbox import SandboxManager
from faasd.state import Database, Function
from faasd.state.instance_models import Instance

log = logging.getLogger(__name__)


@dataclass
class PlatformOptions:
    reaper_interval_s: float | None = None
    poll_interval_s: float = 1.0
    max_async_concurrency: int = 16
    shutdown_grace_s: float = 5.0


class Platform:
    def __init__(
        self,
        settings: Settings,
        worker_factory: WorkerFactory,
        *,
        db: Database | None = None,
        images: ImageStoreLike | None = None,
        sandboxes: SandboxRunner | None = None,
        options: PlatformOptions | None = None,
        gateways: GatewayRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.gateways = gateways if gateways is not None else GatewayRegistry()
        """Open gateway channels of warm workers, by function (see :mod:`faasd.runtime.gateway_channel`)."""
        self.options = options or PlatformOptions()
        self.db = db or Database(settings.db_url)
        self.db.create_all()
        self.images = images
        self.image_pulls = ImageEnsurer(settings, images if isinstance(images, ImageStore) else None)
        self.worker_factory = worker_factory
        self.metrics = Metrics()
        self.namespaces = NamespaceService(self.db)
        self.secrets = SecretService(self.db)
        self.functions = FunctionService(
            self.db,
            image_check=self._check_image if images is not None else None,
            secret_check=self.secrets.require,
        )
        self.functions.default_isolation = settings.isolation
        self.functions.disk_check = lambda mb: check_disk_limit(settings, mb, "each worker of the function")
        self.keys = ApiKeyService(self.db, self.namespaces)
        self.rate_limiter = RateLimiter()
        self.logs = LogService(self.db)
        self.runner = FunctionRunner(
            worker_factory, self.secrets, self.metrics, reaper_interval_s=self.options.reaper_interval_s
        )
        if settings.ephemeral_spare_ttl_s > 0 and isinstance(worker_factory, PreparingFactory):
            self.runner.spares = Spares(worker_factory, settings.ephemeral_spare_ttl_s, self.metrics.spares)
        self.executions = ExecutionService(
            self.db,
            self.functions,
            self.runner,
            self.logs,
            self.metrics,
            max_async_concurrency=self.options.max_async_concurrency,
            poll_interval_s=self.options.poll_interval_s,
            max_payload_bytes=settings.max_payload_bytes,
        )
        self.execute = (
            ExecuteService(images, sandboxes, settings, resolve_image=self.resolve_image)
            if images is not None and sandboxes is not None
            else None
        )
        self.snapshots: SnapshotService | None = SnapshotService.for_platform(
            settings, worker_factory, self.runner, self.functions, self.metrics
        )
        """Snapshots/branches/merges and the checkpointed/branched modes (None without real sandboxes)."""
        self.instances: InstanceService | None = (
            InstanceService(
                self.db,
                settings,
                images,
                sandboxes,
                self.snapshots.store if self.snapshots else None,
                ensure_image=self.ensure_image,
            )
            if images is not None and isinstance(sandboxes, SandboxManager)
            else None
        )
        """Persistent instances (None without real sandboxes)."""
        self.seed: SeedExecuteService | None = None
        """The seed platform's execute modes, fork, prewarm and metrics (None without one-off execution)."""
        if self.execute is not None and images is not None:
            pool = (
                WarmExecPool(settings, sandboxes, self.resolve_image, images.layer_dirs)
                if isinstance(sandboxes, SandboxManager)
                else None
            )
            self.seed = SeedExecuteService(
                self.execute,
                self.resolve_image,
                pool=pool,
                instances=self.instances,
                snapshots=self.snapshots,
            )
        self.tenancy = Tenancy(self.db, self.namespaces, self.runner, self.snapshots, self.instances)
        """Who owns what, namespace use and quotas (:mod:`faasd.platform.tenancy`)."""
        self.runner.start_gate = self.tenancy.worker_start
        if self.instances is not None:
            self.instances.admit = self.tenancy.instance_start
        self.jobs = JobService(self)
        self.addresses: DirectAddresses | None = (
            DirectAddresses(self.db, settings.direct_pool, settings.direct_port)
            if settings.direct_pool and isinstance(sandboxes, SandboxManager)
            else None
        )
        """Direct function addresses on ``lo`` (None when turned off or without real sandboxes)."""
        self.runner.direct = self.addresses
        self.started = False
        self.started_at = time.time()
        self.adoption = AdoptionReport()
        """What start-up re-adopted from the previous daemon (:mod:`faasd.platform.adoption`)."""

    async def resolve_image(self, ref: str) -> Any:
        """The image a reference names, for one-off executions (execute, prewarm, workspaces).

        A missing image is pulled first when a registry is configured and reachable (:meth:`ensure_image`);
        otherwise a reference that is not in the image store is a 404 that names the image and says how to
        get it."""
        if self.images is None:
            raise NotFoundError(f"image {ref!r}: this daemon has no image store", image=ref)
        await self.ensure_image(ref)
        try:
            return await asyncio.to_thread(self.images.get, ref)
        except NotFoundError:
            raise NotFoundError(
                f"image {ref!r} is not in the image store; import it (faas image import FILE --ref {ref}) "
                "or use a base image such as faasd/python:latest",
                image=ref,
            ) from None

    async def ensure_image(self, ref: str) -> None:
        """Pull ``ref`` when it is not in the image store (see :mod:`faasd.platform.pulls`)."""
        await self.image_pulls.ensure(ref)

    def _check_image(self, ref: str) -> None:
        assert self.images is not None
        try:
            self.images.get(ref)
        except NotFoundError:
            raise InvalidInputError(
                f"image {ref!r} is not in the image store; import it first (faas images import) "
                "or use a base image such as faasd/python:latest",
                image=ref,
            ) from None

    # -- lifecycle ----------------------------------------------------------------------------
    async def reconcile(self) -> ReconcileReport:
        report = self.executions.reconcile()
        # before orphans are cleaned up: sandboxes a previous daemon left running are re-adopted (and the
        # writable layers of instances that exited meanwhile are kept); the rest are drained below
        try:
            self.adoption = await adopt_all(self.instances, self.snapshots, skip_names=(WORKSPACE_PREFIX,))
        except Exception:  # never keep the daemon from starting; what was not adopted is cleaned up below
            log.exception("re-adopting the previous daemon's sandboxes failed")
        if self.instances is not None:
            self.instances.reconcile()
            await self._drop_execute_instances()
        try:
            report.orphans_removed = list(await self.worker_factory.cleanup_orphans())
        except FaasdError as exc:
            log.error("cleaning up orphaned sandboxes failed: %s", exc.message)
        if report.orphans_removed:
            log.info(
                "removed %d orphaned sandbox(es): %s", len(report.orphans_removed), report.orphans_removed
            )
        if self.addresses is not None:  # after the orphans: they held the old listening sockets
            try:
                await self.addresses.reconcile(self.functions.list())
            except FaasdError as exc:
                log.error("reconciling direct addresses failed: %s", exc.message)
        return report

    async def _drop_execute_instances(self) -> None:
        """Workspaces of execute modes do not outlive the daemon that created them (their TTLs were kept
        in memory): delete the instances a previous run left."""
        assert self.instances is not None
        for inst in self.instances.list():
            if (inst.name or "").startswith(WORKSPACE_PREFIX):
                try:
                    await self.instances.delete(inst.id)
                except FaasdError as exc:
                    log.warning("could not delete leftover execute workspace %s: %s", inst.id, exc.message)

    async def _assign_address(self, fn: Function) -> None:
        if self.addresses is None:
            return
        try:
            address = await self.addresses.assign(fn)
        except FaasdError as exc:
            log.error("function %s gets no direct address: %s", fn.name, exc.message)
            address = None
        if address is not None:
            self.runner.watch_direct(fn)
        else:
            self.runner.unwatch_direct(fn.name)

    async def start(self) -> ReconcileReport:
        report = await self.reconcile()
        for fn in self.functions.list():
            await self._assign_address(fn)
            if fn.mode in POOLED_MODES and fn.scale_min > 0:
                await self.runner.pool_for(fn)  # pre-warms in the background
        self.executions.start()
        if self.instances is not None:
            self.instances.start_background()
        self.started = True
        return report

    async def close(self) -> None:
        await self.executions.stop(self.options.shutdown_grace_s)
        if self.seed is not None:
            await self.seed.close()
        if self.settings.keep_sandboxes_on_shutdown:
            # instances and restored sandboxes keep running; the next daemon re-adopts them
            await release_all(self.instances, self.snapshots)
        if self.instances is not None:
            await self.instances.close()
        await self.runner.close()
        if self.execute is not None:
            await self.execute.close()
        if self.addresses is not None:
            await self.addresses.close()
        if self.snapshots is not None:
            await self.snapshots.close()
        # invocations cancelled while the pools closed record their failure after executions.stop()
        self.executions.journal.flush()
        self.started = False

    # -- function operations ------------------------------------------------------------------
    def view(self, fn: Function) -> dict[str, Any]:
        out = function_dict(fn, self.runner.status(fn))
        out["address"] = self.addresses.address_of(fn.name) if self.addresses is not None else None
        out["direct_url"] = self.addresses.url_of(fn.name) if self.addresses is not None else None
        return out

    async def deploy(self, spec: FunctionSpec, namespace: str = DEFAULT_NAMESPACE) -> Function:
        self.namespaces.require(namespace)
        if spec.mode in POOLED_MODES and spec.scale.min > 0:  # its pre-warmed workers must fit the quotas
            self.tenancy.guard.check(
                namespace, Usage(sandboxes=spec.scale.min, memory_mb=spec.scale.min * spec.limits.memory_mb)
            )
        self._check_branch_from(spec, namespace)
        await self.ensure_image(spec.image)
        fn = self.functions.create(spec, namespace)
        await self._assign_address(fn)
        if fn.mode in POOLED_MODES and fn.scale_min > 0:
            await self.runner.pool_for(fn)
        return fn

    def _check_branch_from(self, spec: FunctionSpec, namespace: str) -> None:
        """A ``branched`` function restores a snapshot of its own namespace (another's: 404, as absent)."""
        if spec.branch_from is not None and self.snapshots is not None:
            self.tenancy.visible(Access(namespace), spec.branch_from, "snapshot")

    async def update(self, name: str, spec: FunctionSpec) -> Function:
        old = self.functions.get(name)
        self._check_branch_from(spec, old.namespace)
        old_image = old.image
        await self.ensure_image(spec.image)
        fn = self.functions.update(name, spec)
        await self.runner.drop(name)
        if self.snapshots is not None:
            await self.snapshots.invalidate(name)
        await self._forget_source_image(name, old_image)
        await self._assign_address(fn)
        if fn.mode in POOLED_MODES and fn.scale_min > 0:
            await self.runner.pool_for(fn)
        return fn

    async def delete(self, name: str) -> None:
        old_image = self.functions.get(name).image
        self.functions.delete(name)
        await self.runner.drop(name)
        if self.addresses is not None:
            await self.addresses.release(name)
        if self.snapshots is not None:
            await self.snapshots.invalidate(name)
        await self._forget_source_image(name, old_image)
        self.logs.delete_function(name)

    async def delete_namespace(self, name: str) -> None:
        """Delete an empty namespace (409 naming what it holds), with its executions, logs and jobs."""
        self.namespaces.delete(name, self.tenancy.contents)
        self.tenancy.purge_history(name)

    async def _forget_source_image(self, name: str, image: str) -> None:
        """Untag ``faasd-fn/<name>:<hash>``, the image a source deploy built, once nothing uses it any more.

        Kept while a function, an instance or a snapshot still names it (snapshots keep using its
        layers). Workers still draining hold leases: the image disappears with the last one. Its blobs
        and layers are freed by the next image ``gc``.
        """
        # only the real image store removes images (test doubles of ImageStoreLike only read)
        if not isinstance(self.images, ImageStore) or not image.startswith(f"{SOURCE_REF_PREFIX}{name}:"):
            return
        if self._image_in_use(image):
            return
        try:
            await asyncio.to_thread(self.images.remove, image, True)
        except FaasdError as exc:
            log.warning("could not remove %s (function %s no longer uses it): %s", image, name, exc.message)
        else:
            log.info("removed %s: function %s no longer uses it", image, name)

    def _image_in_use(self, image: str) -> bool:
        if any(fn.image == image for fn in self.functions.list()):
            return True
        with self.db.session() as s:
            if s.scalar(select(Instance.id).where(Instance.image == image).limit(1)) is not None:
                return True
        if self.snapshots is not None and self.images is not None:
            try:
                own_layer = str(self.images.layer_dirs(self.images.get(image))[-1])  # the source layer
            except (FaasdError, IndexError):
                return False
            for snap in self.snapshots.store.heads():
                named = (snap.meta.image_ref, (snap.meta.extra.get("worker") or {}).get("image"))
                if image in named or own_layer in map(str, snap.meta.layers):
                    return True
        return False

    async def scale(
        self, name: str, *, min: int | None = None, max: int | None = None, replicas: int | None = None
    ) -> Function:
        fn = self.functions.get(name)
        if replicas is not None:
            if replicas < 0 or replicas > 100:
                raise InvalidInputError(f"replicas must be between 0 and 100, got {replicas}")
            min, max = replicas, builtin_max(fn.scale_max if max is None else max, replicas, 1)
        if fn.mode in POOLED_MODES and min is not None:  # workers started now must fit the quotas
            extra = builtin_max(0, min - self.runner.live_workers(fn.name))
            self.tenancy.guard.check(fn.namespace, Usage(sandboxes=extra, memory_mb=extra * fn.memory_mb))
        fn = self.functions.set_scale(name, min=min, max=max)
        await self.runner.scale(fn, min=fn.scale_min, max=fn.scale_max, replicas=replicas)
        return fn


builtin_max = max
