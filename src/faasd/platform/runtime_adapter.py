"""The real worker factory: :func:`faasd.runtime.workers.prepare_worker` / ``launch`` on image layers from the
store (a sandbox may be created ahead of its start: :mod:`faasd.platform.spares`).

Requests and results pass through as the runtime's own types (the platform → runtime seam, see
:mod:`faasd.platform.invocation`). Writes the function's secrets to a private directory (0700/0400)
bind-mounted read-only at ``/run/secrets``; leases the image in the store while the worker lives so it
cannot be removed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.platform.functions import oci_runtime
from faasd.platform.worker_protocol import PoolWorker, WorkerConfig
from faasd.runtime.gateway_channel import GatewayRegistry
from faasd.runtime.models import (
    OPENFAAS_SECRETS_DIR,
    SECRETS_DIR_IN_CONTAINER,
    BindMount,
    NetworkSpec,
)
from faasd.runtime.sandbox import SandboxManager
from faasd.runtime.workers import (
    InvokeEvent,
    InvokeRequest,
    InvokeResult,
    PreparedWorker,
    Worker,
    WorkerSpec,
    prepare_worker,
)

log = logging.getLogger(__name__)


def function_network(mode: object) -> NetworkSpec:
    """The sandbox network of a function's worker: ``egress`` when asked for, otherwise ``none``
    (functions never get the other runtime modes)."""
    return NetworkSpec(mode="egress" if mode == "egress" else "none")


def runtime_handler(runtime: str, handler: str | None) -> str | None:
    """Accept ``module.function`` for python (the runtime wants ``module:function``)."""
    if handler is None or runtime != "python" or ":" in handler:
        return handler
    module, _, func = handler.rpartition(".")
    return f"{module}:{func}" if module else handler


class RuntimeWorker:
    """:class:`PoolWorker` over a real :class:`faasd.runtime.workers.Worker`."""

    def __init__(self, worker: Worker, on_close: list[Any]) -> None:
        self._worker = worker
        self._on_close = on_close

    @property
    def id(self) -> str:
        return self._worker.id

    @property
    def alive(self) -> bool:
        return self._worker.alive

    @property
    def worker(self) -> Worker:
        """The runtime worker (its ``sandbox`` is what snapshots checkpoint)."""
        return self._worker

    @property
    def init_ms(self) -> float | None:
        v = getattr(self._worker, "init_ms", None)
        return float(v) if v is not None else None

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        return await self._worker.invoke(request)

    def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        return self._worker.invoke_stream(request)

    async def close(self) -> None:
        try:
            await self._worker.close()
        finally:
            await _run_cleanups(self._on_close)


async def _run_cleanups(cleanups: list[Any]) -> None:
    for cb in cleanups:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(cb)
    cleanups.clear()


class PreparedRuntimeWorker:
    """:class:`faasd.platform.worker_protocol.PreparedPoolWorker` over a created, not started runtime
    worker (its secrets written and its image leased)."""

    def __init__(
        self,
        factory: RuntimeWorkerFactory,
        config: WorkerConfig,
        prepared: PreparedWorker,
        cleanups: list[Any],
    ) -> None:
        self.factory = factory
        self.config = config
        self._prepared = prepared
        self._cleanups = cleanups

    async def launch(self, *, ahead: bool = False) -> PoolWorker:
        try:
            worker = await self._prepared.launch(count_prepare=not ahead)
        except BaseException:
            await _run_cleanups(self._cleanups)
            raise
        if worker.gateway is not None:
            self.factory.gateways.add(self.config.function, worker.gateway)
        return RuntimeWorker(worker, self._cleanups)

    async def discard(self) -> None:
        try:
            await self._prepared.discard()
        finally:
            await _run_cleanups(self._cleanups)


class RuntimeWorkerFactory:
    def __init__(self, settings: Settings, manager: SandboxManager, images: Any) -> None:
        self.settings = settings
        self.manager = manager
        self.images = images
        self.secrets_root = settings.run_dir / "secrets"
        self.gateways = GatewayRegistry()
        """Gateway channels of the workers this factory started (the API hands connections over them)."""

    def _write_secrets(self, sandbox_id: str, secrets: dict[str, bytes]) -> Path:
        self.secrets_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        d = self.secrets_root / sandbox_id
        d.mkdir(mode=0o700)
        for name, value in secrets.items():
            fd = os.open(d / name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o400)
            try:
                os.write(fd, value)
            finally:
                os.close(fd)
        os.chmod(d, 0o500)
        return d

    def _remove_secrets(self, sandbox_id: str) -> None:
        d = self.secrets_root / sandbox_id
        if d.exists():
            os.chmod(d, 0o700)
            shutil.rmtree(d, ignore_errors=True)

    async def start(self, config: WorkerConfig) -> PoolWorker:
        prepared = await self.prepare(config)
        return await prepared.launch()

    async def prepare(self, config: WorkerConfig) -> PreparedRuntimeWorker:
        """The worker's sandbox created, not started (see :class:`PreparedRuntimeWorker`)."""
        image = await asyncio.to_thread(self.images.get, config.image)
        lowers = await asyncio.to_thread(self.images.layer_dirs, image)
        spec = WorkerSpec(
            function=config.function,
            lowers=lowers,
            mode=config.runtime,  # type: ignore[arg-type]
            image_config=image.config,
            handler=runtime_handler(config.runtime, config.handler),
            command=list(config.command) if config.command else None,
            port=config.port or 8080,
            env=dict(config.env),
            limits=config.limits(),
            network=function_network(config.network),
            runtime=oci_runtime(config.isolation),
            direct_listener=config.direct_listener,
        )
        sandbox_id = spec.new_sandbox_id()
        spec.sandbox_id = sandbox_id
        cleanups: list[Any] = []
        try:
            if config.secrets:
                d = await asyncio.to_thread(self._write_secrets, sandbox_id, dict(config.secrets))
                cleanups.append(lambda: self._remove_secrets(sandbox_id))
                spec.mounts.append(BindMount(source=d, target=SECRETS_DIR_IN_CONTAINER, readonly=True))
                spec.mounts.append(BindMount(source=d, target=OPENFAAS_SECRETS_DIR, readonly=True))
            if hasattr(self.images, "lease"):
                await asyncio.to_thread(self.images.lease, image.id, sandbox_id)
                cleanups.append(lambda: self.images.release(image.id, sandbox_id))
            prepared = await prepare_worker(self.manager, spec)
        except BaseException:
            await _run_cleanups(cleanups)
            raise
        return PreparedRuntimeWorker(self, config, prepared, cleanups)

    async def cleanup_orphans(self) -> list[str]:
        removed = list(await self.manager.cleanup_orphans())
        if self.secrets_root.exists():
            live = {s.id for s in await self.manager.list()}
            for d in self.secrets_root.iterdir():
                if d.name not in live:
                    await asyncio.to_thread(self._remove_secrets, d.name)
        return removed
