"""What the platform needs from a worker, independent of how the runtime implements it.

:class:`PoolWorker` and :class:`WorkerFactory` are the only seams between the pool/execution logic and
the runtime: the real implementation (:mod:`faasd.platform.runtime_adapter`) wraps
``faasd.runtime.workers.start_worker``; unit tests pass a test double. A pool worker takes the runtime's
request and answers with the runtime's result (the platform → runtime seam, see
:mod:`faasd.platform.invocation`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from faasd.runtime.agent_client import InvokeEvent, InvokeRequest, InvokeResult
from faasd.runtime.models import Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything needed to start a worker for a function (derived from the function record)."""

    function: str
    image: str
    runtime: str
    handler: str | None
    command: list[str] | None
    port: int | None
    env: Mapping[str, str]
    secrets: Mapping[str, bytes]
    memory_mb: int
    cpu_cores: float
    pids: int
    timeout_s: float
    disk_mb: int
    concurrency: int = 1
    network: str = "none"
    """``none`` (own loopback only) or ``egress`` (outgoing connections through NAT)."""
    isolation: str = "runc"
    """``runc`` or ``gvisor`` (the worker's sandbox runs under runsc)."""
    direct_listener: socket.socket | None = field(default=None, compare=False)
    """The function's direct-address listening socket (host netns), handed into the sandbox."""

    def limits(self) -> Limits:
        """The sandbox limits of the function's workers (started or restored): the one place they are
        built from a function's configuration."""
        return Limits(
            memory_mb=self.memory_mb,
            cpu_cores=self.cpu_cores,
            pids=self.pids,
            disk_mb=self.disk_mb,
            timeout_s=self.timeout_s,
        )


@runtime_checkable
class PoolWorker(Protocol):
    """A started worker: one sandbox with an agent, able to serve invocations."""

    @property
    def id(self) -> str: ...

    @property
    def alive(self) -> bool:
        """False once the worker died or was closed (its lease is then released as broken)."""
        ...

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        """Run one request. A function that raised or crashed is a result with ``error`` set; a limit
        that ended the request (timeout, memory, pids) raises :class:`faasd.errors.ResourceLimitError`;
        a worker that died raises :class:`faasd.errors.RuntimeFailure`."""
        ...

    def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        """Output chunks while the function runs, then exactly one :class:`InvokeResult` (errors as
        :meth:`invoke`)."""
        ...

    async def close(self) -> None: ...


class WorkerFactory(Protocol):
    async def start(self, config: WorkerConfig) -> PoolWorker: ...

    async def cleanup_orphans(self) -> list[str]:
        """Remove sandboxes left by a previous (crashed) daemon; returns their ids."""
        ...


class PreparedPoolWorker(Protocol):
    """A worker whose sandbox is created and not started: launch or discard it exactly once."""

    @property
    def config(self) -> WorkerConfig: ...

    async def launch(self, *, ahead: bool = False) -> PoolWorker:
        """Start it and wait until it takes requests (errors as :meth:`WorkerFactory.start`; nothing is
        left behind on failure). ``ahead``: it was made ahead of time, its ``init_ms`` counts the start
        only."""
        ...

    async def discard(self) -> None: ...


@runtime_checkable
class PreparingFactory(WorkerFactory, Protocol):
    """A factory that can create a worker's sandbox ahead of its start (:mod:`faasd.platform.spares`)."""

    async def prepare(self, config: WorkerConfig) -> PreparedPoolWorker: ...


async def close_quietly(worker: PoolWorker) -> None:
    """Close ``worker``; a failure is logged, not raised (the caller is tidying up)."""
    try:
        await worker.close()
    except Exception:
        log.exception("closing worker %s failed", worker.id)
