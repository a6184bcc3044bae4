"""Sandbox runtime: OCI spec generation, runc/runsc driver, cgroups, seccomp, netns, setns proxy, sandboxes.

The public entry points are re-exported here; the agent-protocol (workers) and CRIU (checkpoint)
modules live beside them and are imported explicitly.
"""

from faasd.runtime.models import (
    BindMount,
    ExecResult,
    ExitStatus,
    Limits,
    NetworkSpec,
    RunResult,
    SandboxInfo,
    SandboxSpec,
)
from faasd.runtime.proxy import LoopbackProxy, open_connection_in_netns
from faasd.runtime.sandbox import Sandbox, SandboxManager, raise_for_limits

__all__ = [
    "BindMount",
    "ExecResult",
    "ExitStatus",
    "Limits",
    "LoopbackProxy",
    "NetworkSpec",
    "RunResult",
    "Sandbox",
    "SandboxInfo",
    "SandboxManager",
    "SandboxSpec",
    "open_connection_in_netns",
    "raise_for_limits",
]
