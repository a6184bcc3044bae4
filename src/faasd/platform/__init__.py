"""Platform services: functions, executions (sync/async/stream), warm pools, one-off execute, secrets,
API keys, function logs, start-up reconciliation. :class:`Platform` wires them together."""

from faasd.platform.core import Platform, PlatformOptions
from faasd.platform.functions import FunctionSpec
from faasd.platform.worker_protocol import (
    Invocation,
    InvocationResult,
    PoolWorker,
    WorkerConfig,
    WorkerFactory,
)

__all__ = [
    "FunctionSpec",
    "Invocation",
    "InvocationResult",
    "Platform",
    "PlatformOptions",
    "PoolWorker",
    "WorkerConfig",
    "WorkerFactory",
]
