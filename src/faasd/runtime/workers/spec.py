"""What to run for one function instance (:class:`WorkerSpec`) and the sandbox it runs in."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from faasd.errors import InvalidInputError
from faasd.runtime.agent_client import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_OUTPUT_BYTES
from faasd.runtime.agent_files import INIT_IN_CONTAINER, agent_mount, node_agent_args, python_agent_args
from faasd.runtime.direct import HANDOVER_SOCKET_IN_CONTAINER
from faasd.runtime.models import BindMount, ImageConfigLike, Limits, NetworkSpec, SandboxSpec

WorkerMode = Literal["python", "node", "exec", "http"]
MODES: tuple[str, ...] = ("python", "node", "exec", "http")
DEFAULT_HANDLERS = {"python": "handler:handle", "node": "handler.js"}


@dataclass
class WorkerSpec:
    """What to run for one function instance."""

    function: str
    """Function name or id: names the sandbox (``fd-<slug>-<random>``) and is ``context.function_name``."""
    lowers: list[Path]
    """Read-only layer dirs of the image (plus code layers), lowest first."""
    mode: WorkerMode = "python"
    image_config: ImageConfigLike | None = None
    handler: str | None = None
    """python: ``module:function`` (default ``handler:handle``);
    node: ``file.js[:export]`` (default ``handler.js``)."""
    code_dir: str = "/function"
    """Where the function's code is inside the sandbox (python/node)."""
    fork_per_request: bool = False
    """python: fork a fresh process from the preloaded agent for every request (the zygote)."""
    command: list[str] | None = None
    """exec: the command run per request (default: the image's entrypoint + cmd).
    http: the server command (default: the image's entrypoint + cmd)."""
    port: int = 8080
    """http: the port the server listens on inside the sandbox."""
    readiness_path: str | None = None
    """http: also require ``GET readiness_path`` to answer with a status < 500 (default: TCP connect only)."""
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    mounts: list[BindMount] = field(default_factory=list)
    user: str | None = None
    cwd: str | None = None
    runtime: Literal["runc", "runsc"] = "runc"
    interpreter: str | None = None
    """python/node: the interpreter in the image (default ``python3`` / ``node`` from PATH)."""
    sandbox_id: str | None = None
    ready_timeout_s: float = 30.0
    max_response_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    direct_listener: socket.socket | None = None
    """python/node/http: a listening socket (the function's direct address, bound by the host) passed
    into the sandbox over SCM_RIGHTS; the agent serves HTTP on it (http mode: ``faasd-init`` relays its
    connections to ``port`` inside the sandbox). Shared by all workers of a function."""

    @property
    def direct(self) -> bool:
        return self.direct_listener is not None and self.mode in ("python", "node", "http")

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"unknown worker mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not self.function:
            raise InvalidInputError("a worker needs a function name")
        if self.fork_per_request and self.mode != "python":
            raise InvalidInputError("fork_per_request is only available for python functions")
        if self.mode == "http" and not 1 <= self.port <= 65535:
            raise InvalidInputError(f"port must be between 1 and 65535, got {self.port}")
        if self.mode == "exec" and not self._exec_command():
            raise InvalidInputError(
                "an exec-mode function needs a command (or an image with an entrypoint/cmd)"
            )
        if self.ready_timeout_s <= 0:
            raise InvalidInputError("ready_timeout_s must be positive")

    def _exec_command(self) -> list[str]:
        if self.command:
            return list(self.command)
        ic = self.image_config
        return [*(ic.entrypoint or []), *(ic.cmd or [])] if ic is not None else []

    def new_sandbox_id(self) -> str:
        slug = re.sub(r"[^a-z0-9_-]+", "-", self.function.lower()).strip("-_")[:24] or "fn"
        return f"fd-{slug}-{uuid.uuid4().hex[:10]}"

    def sandbox_spec(self, sandbox_id: str, extra_mounts: Sequence[BindMount] = ()) -> SandboxSpec:
        """The :class:`SandboxSpec` this worker runs in (mounts for agent/init included)."""
        handler = self.handler or DEFAULT_HANDLERS.get(self.mode, "")
        args: list[str] | None
        mounts = [*self.mounts, *extra_mounts]
        network = self.network
        if self.mode == "python":
            args = python_agent_args(
                handler,
                code_dir=self.code_dir,
                function_name=self.function,
                fork=self.fork_per_request,
                python=self.interpreter or "python3",
            )
            if self.direct:
                args += ["--direct-socket", HANDOVER_SOCKET_IN_CONTAINER]
                if self.limits.timeout_s:
                    args += ["--direct-timeout-s", str(self.limits.timeout_s)]
            mounts.append(agent_mount())
        elif self.mode == "node":
            # Node does not reap orphaned processes: faasd-init is PID 1 and runs the agent as its child.
            args = [
                INIT_IN_CONTAINER,
                "--main",
                *(["--listen-fd-from", HANDOVER_SOCKET_IN_CONTAINER] if self.direct else []),
                "--",
                *node_agent_args(
                    handler,
                    code_dir=self.code_dir,
                    function_name=self.function,
                    node=self.interpreter or "node",
                ),
            ]
            if self.direct and self.limits.timeout_s:
                args += ["--direct-timeout-s", str(self.limits.timeout_s)]
            mounts.append(agent_mount())
        elif self.mode == "exec":
            args = [INIT_IN_CONTAINER]
        else:
            args = list(self.command) if self.command else None
            if self.direct:  # faasd-init takes the socket and relays it to the server's port
                args = [
                    INIT_IN_CONTAINER,
                    "--main",
                    "--listen-fd-from",
                    HANDOVER_SOCKET_IN_CONTAINER,
                    "--forward",
                    str(self.port),
                    "--",
                    *self._exec_command(),
                ]
            if network.mode == "none":
                network = NetworkSpec(mode="loopback-proxy", ports=(self.port,))
        return SandboxSpec(
            id=sandbox_id,
            lowers=list(self.lowers),
            args=args,
            image_config=self.image_config,
            env=dict(self.env),
            cwd=self.cwd,
            user=self.user,
            limits=self.limits,
            network=network,
            mounts=mounts,
            runtime=self.runtime,
            annotations={"faasd.function": self.function, "faasd.worker.mode": self.mode},
        )
