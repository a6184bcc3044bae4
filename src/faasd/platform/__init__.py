"""Platform services: functions, executions (sync/async/stream), warm pools, one-off execute, secrets,
API keys, function logs, start-up reconciliation. :class:`Platform` wires them together."""

from faasd.platform.core import Platform, PlatformOptions
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation, Outcome
from faasd.platform.worker_protocol import PoolWorker, WorkerConfig, WorkerFactory

__all__ = [
    "FunctionSpec",
    "Invocation",
    "Outcome",
    "Platform",
    "PlatformOptions",
    "PoolWorker",
    "WorkerConfig",
    "WorkerFactory",
]
