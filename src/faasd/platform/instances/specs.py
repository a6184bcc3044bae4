"""What the instance service takes: typed, already validated inputs (no request models here).

The API (:mod:`faasd.api.instance_models`), jobs, the seed gateway's execute and the console build these
from their own (validated) requests. The checks below are the ones that hold whoever the caller is.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal

from faasd.errors import InvalidInputError
from faasd.runtime.models import check_env_names

DEFAULT_IMAGE = "faasd/python:latest"
"""The image of an instance given neither an image nor a snapshot."""


def _checked_env(env: dict[str, str]) -> None:
    try:
        check_env_names(env)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


@dataclass
class InstanceSpec:
    """A new instance: on ``image`` or restored from ``snapshot_id`` (default: :data:`DEFAULT_IMAGE`)."""

    image: str | None = None
    snapshot_id: str | None = None
    name: str | None = None
    cpu_cores: float = 1.0
    memory_mb: int = 512
    disk_gb: float = 1.0
    pids: int = 4096
    isolation: Literal["runc", "gvisor"] | None = None
    """Default: the daemon's ``FAASD_ISOLATION``."""
    ttl_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    enable_ssh: bool = False
    seed: int | None = None
    """With ``snapshot_id``: the instance is copy 0 of a branch with this seed."""

    def __post_init__(self) -> None:
        if self.image is None and self.snapshot_id is None:
            self.image = DEFAULT_IMAGE
        if self.seed is not None and self.snapshot_id is None:
            raise InvalidInputError("'seed' needs 'snapshot_id' (it seeds a copy restored from a snapshot)")
        _checked_env(self.env)


@dataclass
class ExecCommand:
    """One command to run in an instance (``args`` as given: no shell unless it names one)."""

    args: list[str]
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.args:
            raise InvalidInputError("'command' must not be empty")
        _checked_env(self.env)


@dataclass
class PortSpec:
    """A port inside the instance to expose on a host listener."""

    internal_port: int
    protocol: Literal["http", "tcp"] = "http"
    subdomain: str | None = None


@dataclass
class UploadedFile:
    """One file to write into an instance (``path`` relative to the upload's target directory)."""

    path: str
    content: bytes
    mode: int = 0o644

    @classmethod
    def from_base64(cls, path: str, content: str, mode: int = 0o644) -> UploadedFile:
        try:
            data = base64.b64decode(content, validate=True)
        except ValueError as exc:
            raise InvalidInputError(f"content of {path!r} is not valid base64: {exc}") from None
        return cls(path, data, mode)
