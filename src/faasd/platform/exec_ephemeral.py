"""One-off execution: run a command or a code snippet in a fresh sandbox on an image, then destroy it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from faasd.config import Settings
from faasd.errors import InvalidInputError, RuntimeFailure, pids_exhausted
from faasd.platform.capacity import check_disk_limit
from faasd.platform.env import EnvVars
from faasd.runtime.models import Limits, RunResult, SandboxSpec, check_working_dir

DEFAULT_IMAGES = {
    "python": "faasd/python:latest",
    "shell": "faasd/python:latest",
    "node": "faasd/node:latest",
}
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
_BAD_COMMAND_RE = re.compile(
    r'exec: "(?P<cmd>[^"]*)": (?P<why>executable file not found in \$PATH|stat [^:]*: no such file or '
    r"directory|permission denied|exec format error|is a directory)"
)
"""How ``runc create`` reports that the process to run does not exist or is not executable."""


class ImageStoreLike(Protocol):
    def get(self, ref: str) -> Any: ...
    def layer_dirs(self, image: Any) -> list[Path]: ...


EnsureImage = Callable[[str], Awaitable[None]]
"""Pulls an image that is not in the store (the platform's ``ensure_image``)."""


class SandboxRunner(Protocol):
    async def run(
        self,
        spec: SandboxSpec,
        stdin: bytes = b"",
        timeout_s: float | None = None,
        *,
        output_limit: int = ...,
        background_teardown: bool = ...,
    ) -> RunResult: ...

    async def settle(self) -> None:
        """Wait for the teardowns ``run(..., background_teardown=True)`` left running."""


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: list[str] | str | None = None
    code: str | None = Field(default=None, max_length=1024 * 1024)
    language: Literal["python", "node", "shell"] | None = None
    image: str | None = Field(default=None, max_length=512)
    env_vars: EnvVars = Field(default_factory=dict)
    timeout_ms: int = Field(default=30000, ge=1, le=3_600_000)
    memory_mb: int = Field(default=256, ge=16, le=65536)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)
    disk_mb: int = Field(default=512, ge=16, le=1048576)
    pids: int = Field(default=256, ge=8, le=65536)
    isolation: Literal["runc", "gvisor"] | None = None
    working_dir: str | None = Field(default=None, max_length=4096)
    stdin: str | None = None
    mode: str = "ephemeral"

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, v: str | None) -> str | None:
        if v is not None:
            check_working_dir(v)
        return v

    @model_validator(mode="after")
    def _one_of(self) -> ExecuteRequest:
        if (self.command is None) == (self.code is None):
            raise ValueError("give exactly one of 'command' or 'code' (+ 'language')")
        if self.code is not None and self.language is None:
            raise ValueError("'code' needs a 'language': python, node or shell")
        if isinstance(self.command, list) and not self.command:
            raise ValueError("'command' must not be empty")
        return self

    def args(self) -> list[str]:
        if self.code is not None:
            return {
                "python": ["python3", "-c", self.code],
                "node": ["node", "-e", self.code],
                "shell": ["/bin/sh", "-c", self.code],
            }[self.language or "shell"]
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command or [])

    def image_ref(self) -> str:
        if self.image:
            return self.image
        return DEFAULT_IMAGES[self.language or "shell"]


class ExecuteService:
    def __init__(
        self,
        images: ImageStoreLike,
        sandboxes: SandboxRunner,
        settings: Settings | None = None,
        *,
        resolve_image: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self.images = images
        self.sandboxes = sandboxes
        self.settings = settings
        self.resolve_image = resolve_image
        """How an image reference becomes an image (the platform's ``resolve_image``, which pulls a missing
        image when a registry is configured); default: the store."""

    async def close(self) -> None:
        """Wait until the sandboxes of finished executions are torn down."""
        await self.sandboxes.settle()

    async def execute(
        self,
        req: ExecuteRequest,
        *,
        runtime: Literal["runc", "runsc"] | None = None,
        stdin: bytes | None = None,
    ) -> dict[str, Any]:
        """Run ``req`` once; ``stdin`` (bytes) replaces ``req.stdin`` (text) when given; ``runtime`` (the seed
        API's explicit choice) overrides ``req.isolation`` and the daemon's default."""
        if req.mode != "ephemeral":
            raise InvalidInputError(f"execute mode {req.mode!r} is not implemented; use 'ephemeral'")
        if runtime is not None:
            isolation = "gvisor" if runtime == "runsc" else "runc"
        else:
            isolation = req.isolation or (self.settings.isolation if self.settings is not None else "runc")
        if self.settings is not None:
            check_disk_limit(self.settings, req.disk_mb, "the execution")
        if self.resolve_image is not None:
            image = await self.resolve_image(req.image_ref())
        else:
            image = self.images.get(req.image_ref())
        lowers = self.images.layer_dirs(image)
        request_id = "rq_" + secrets.token_hex(10)
        timeout_s = req.timeout_ms / 1000
        spec = SandboxSpec(
            id="fd-x" + secrets.token_hex(8),
            lowers=lowers,
            args=req.args(),
            image_config=image.config,
            env=dict(req.env_vars),
            cwd=req.working_dir,
            limits=Limits(
                memory_mb=req.memory_mb, cpu_cores=req.cpu_cores, disk_mb=req.disk_mb, pids=req.pids,
                timeout_s=timeout_s,
            ),
            runtime="runsc" if isolation == "gvisor" else "runc",
        )
        try:
            data = stdin if stdin is not None else (req.stdin or "").encode()
            result = await self.sandboxes.run(  # answers before the sandbox is torn down; close() waits
                spec, stdin=data, timeout_s=timeout_s, output_limit=MAX_OUTPUT_BYTES, background_teardown=True
            )
        except RuntimeFailure as exc:
            bad = _BAD_COMMAND_RE.search(exc.message)
            if bad is None:
                raise
            # the caller's mistake (runc create refuses to start it), not a failure of the platform
            raise InvalidInputError(
                f"command {bad['cmd']!r} cannot be run in image {req.image_ref()!r}: {bad['why']}; "
                "check the command name and the image's PATH",
                command=bad["cmd"],
            ) from None
        if result.pids_exhausted:
            raise pids_exhausted(
                result.pids_limit,
                "the execution",
                request_id=request_id,
                detected_ms=result.pids_detected_ms,
                stdout=result.stdout[-8192:].decode("utf-8", "replace"),
                stderr=result.stderr[-8192:].decode("utf-8", "replace"),
            )
        return {
            "request_id": request_id,
            "exit_code": result.exit_code,
            "stdout": result.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            "stderr": result.stderr[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            "stdout_truncated": result.stdout_truncated or len(result.stdout) > MAX_OUTPUT_BYTES,
            "stderr_truncated": result.stderr_truncated or len(result.stderr) > MAX_OUTPUT_BYTES,
            "duration_ms": round(result.duration_ms, 3),
            "timed_out": result.timed_out,
            "oom_killed": result.oom_killed,
            "isolation": isolation,
        }
