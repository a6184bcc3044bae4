"""What the platform needs from a worker, independent of how the runtime implements it.

:class:`PoolWorker` and :class:`WorkerFactory` are the only seams between the pool/execution logic and
the runtime: the real implementation (:mod:`faasd.platform.runtime_adapter`) wraps
``faasd.runtime.workers.start_worker``; unit tests pass a test double.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class Invocation:
    """One request to a function, as the platform hands it to a worker."""

    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    path: str = "/"
    method: str = "POST"
    query: str = ""
    timeout_s: float = 30.0
    execution_id: str = ""


@dataclass
class InvocationResult:
    """What the function answered. ``status`` is the HTTP status the caller gets."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None
    error: str | None = None
    """Set when the function failed (exception, non-zero exit, crash): human-readable reason."""
    timed_out: bool = False
    run_ms: float | None = None
    traceback: str | None = None
    error_code: str | None = None
    error_details: dict[str, str | int | float | None] = field(default_factory=dict)
    """With ``error_code``: what the API adds to the error's ``details`` (e.g. ``limit``, ``pids``)."""
    """Machine-readable kind of ``error`` when it is not the function's own failure, e.g. ``pids_exhausted``
    (the API answers ``function_error`` when unset)."""


@dataclass(frozen=True)
class StreamChunk:
    stream: Literal["stdout", "stderr", "body"]
    """``body``: http-runtime functions stream their response body as it arrives."""
    data: bytes


StreamEvent = StreamChunk | InvocationResult
"""``invoke_stream`` yields output chunks, then exactly one :class:`InvocationResult` last."""


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


@runtime_checkable
class PoolWorker(Protocol):
    """A started worker: one sandbox with an agent, able to serve invocations."""

    @property
    def id(self) -> str: ...

    async def invoke(self, invocation: Invocation) -> InvocationResult: ...

    def invoke_stream(self, invocation: Invocation) -> AsyncIterator[StreamEvent]: ...

    async def close(self) -> None: ...


class WorkerFactory(Protocol):
    async def start(self, config: WorkerConfig) -> PoolWorker: ...

    async def cleanup_orphans(self) -> list[str]:
        """Remove sandboxes left by a previous (crashed) daemon; returns their ids."""
        ...
