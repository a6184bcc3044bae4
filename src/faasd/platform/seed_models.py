"""The seed platform's ``ExecuteRequest`` (a superset of faasd's own execute request) and its coercions.

The seed gateway's clients send ``command`` as a shell string, ``env_vars`` as ``[[key, value], ...]``,
``runtime`` as ``docker``/``auto``/``firecracker`` and always a ``cache_key`` (its SDK memoises by
default). Every field is honoured or refused with a 400 that says why; none is ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from faasd.errors import InvalidInputError
from faasd.platform.env import EnvVarsOrPairs
from faasd.platform.exec_ephemeral import ExecuteRequest

Mode = Literal["ephemeral", "cached", "checkpointed", "branched", "persistent"]
MODES: tuple[str, ...] = ("ephemeral", "cached", "checkpointed", "branched", "persistent")
RuntimeName = Literal["docker", "auto", "runc", "gvisor", "runsc", "firecracker"]
SNAPSHOTTING_MODES = ("checkpointed", "branched", "persistent")
DEFAULT_WORKSPACE_TTL_S = 600.0




def sandbox_runtime(name: str | None) -> Literal["runc", "runsc"]:
    """The sandbox runtime for the seed's ``runtime`` field."""
    if name in (None, "docker", "auto", "runc"):
        return "runc"
    if name in ("gvisor", "runsc"):
        return "runsc"
    if name == "firecracker":
        raise InvalidInputError(
            "runtime 'firecracker' is not available: faasd runs sandboxes as runc containers (namespaces, "
            "cgroups, seccomp) or under gVisor; use runtime 'docker'/'auto' (runc) or 'gvisor' (runsc) "
            "for a stronger isolation boundary",
            runtime=name,
        )
    raise InvalidInputError(f"unknown runtime {name!r}; use 'docker', 'auto', 'gvisor' or 'runsc'")


class SeedExecuteRequest(ExecuteRequest):
    """``POST /api/v1/execute``: faasd's execute request (``command`` or ``code`` + ``language``,
    ``image``, ``env_vars``, ``timeout_ms``, ``memory_mb``, ``cpu_cores``, ``working_dir``, ``stdin``)
    plus the seed's ``runtime``, ``mode``, ``cache_key``, ``snapshot_id``, ``branch_from`` and faasd's
    ``workspace``/``ttl_s``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    env_vars: EnvVarsOrPairs = Field(default_factory=dict)
    """Also the seed's shapes: ``[["K", "V"], ...]`` and ``["K=V", ...]``."""
    runtime: RuntimeName | None = Field(
        default=None, description="docker/auto/runc: runc sandbox; gvisor/runsc: gVisor; firecracker: 400"
    )
    mode: Mode | None = Field(  # type: ignore[assignment]
        default=None, description="default: 'cached' with a cache_key, else 'ephemeral'"
    )
    snapshot_id: str | None = Field(default=None, min_length=1, max_length=128)
    branch_from: str | None = Field(default=None, min_length=1, max_length=128)
    cache_key: str | None = Field(default=None, min_length=1, max_length=512)
    workspace: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="mode persistent: the request_id of the execution whose workspace to use again",
    )
    ttl_s: float | None = Field(
        default=None, gt=0, le=7 * 86400, description="mode persistent: workspace idle TTL (default 600 s)"
    )

    @model_validator(mode="after")
    def _not_blank(self) -> SeedExecuteRequest:
        if isinstance(self.command, str) and not self.command.strip():
            raise ValueError("'command' must not be blank")
        return self

    # -- derived --------------------------------------------------------------------------------
    @property
    def effective_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        return "cached" if self.cache_key is not None else "ephemeral"

    def effective_runtime(self, default_isolation: str = "runc") -> Literal["runc", "runsc"]:
        """The sandbox runtime: the seed's ``runtime`` when given, else faasd's ``isolation``, else the
        daemon's default (``FAASD_ISOLATION``)."""
        if self.runtime is not None:
            return sandbox_runtime(self.runtime)
        return "runsc" if (self.isolation or default_isolation) == "gvisor" else "runc"

    def check(self) -> None:
        """Cross-field rules (400 with the reason): which fields each mode takes."""
        mode = self.effective_mode
        runtime = self.effective_runtime()
        if self.cache_key is not None and mode != "cached":
            raise InvalidInputError(
                f"'cache_key' keys the result cache of mode 'cached'; drop it for mode {mode!r}"
            )
        if self.snapshot_id is not None and mode != "checkpointed":
            raise InvalidInputError(
                f"'snapshot_id' restores a snapshot in mode 'checkpointed' (use 'branch_from' with mode "
                f"'branched' to run in a copy); it does nothing in mode {mode!r}"
            )
        if mode == "branched" and self.branch_from is None:
            raise InvalidInputError(
                "mode 'branched' needs 'branch_from': a snapshot id or the request_id of an earlier "
                "checkpointed or persistent execution"
            )
        if self.branch_from is not None and mode != "branched":
            raise InvalidInputError(f"'branch_from' is only valid with mode 'branched', not {mode!r}")
        if mode == "branched" and self.image is not None:
            raise InvalidInputError(
                "mode 'branched' runs on the filesystem of the state it branches from; drop 'image'"
            )
        if mode == "checkpointed" and self.snapshot_id is not None and self.image is not None:
            raise InvalidInputError(
                "with 'snapshot_id' the command runs in the snapshot's filesystem; drop 'image'"
            )
        if (self.workspace is not None or self.ttl_s is not None) and mode != "persistent":
            raise InvalidInputError(f"'workspace' and 'ttl_s' belong to mode 'persistent', not {mode!r}")
        if mode == "persistent" and self.workspace is not None and self.image is not None:
            raise InvalidInputError("an existing workspace keeps its image; drop 'image' or 'workspace'")
        if mode in SNAPSHOTTING_MODES and runtime != "runc":
            raise InvalidInputError(
                f"mode {mode!r} keeps process state with CRIU, which needs the runc runtime; "
                "use runtime 'docker'/'auto' for it (gVisor runs ephemeral and cached executions)"
            )
