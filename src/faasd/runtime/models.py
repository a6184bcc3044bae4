"""Value types describing a sandbox: what to run, with which limits, network and mounts.

They are plain dataclasses (no I/O) so that every layer can build and log them. Re-exported by
``faasd.runtime.sandbox`` and ``faasd.runtime``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from faasd.errors import InvalidInputError, ResourceLimitError, pids_exhausted

SANDBOX_ID_RE = re.compile(r"^fd-[a-z0-9][a-z0-9_-]{0,56}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_names(env: Mapping[str, str]) -> None:
    """The one check of environment variable names (functions, execute, instances, sandboxes).

    Raises ValueError (pydantic turns it into a 422) unless every name is a portable identifier: never
    empty, no ``=`` (``A=B`` would silently set ``A``) and no NUL (runc refuses those).
    """
    for name in env:
        if not ENV_NAME_RE.match(name):
            raise ValueError(
                f"environment variable name {name!r} is invalid: use letters, digits and '_', "
                "not starting with a digit (no '=', no empty name)"
            )


def check_working_dir(path: str) -> None:
    """Raises ValueError unless ``path`` is an absolute, normalised directory path outside /proc.

    (``/proc/self/fd/N`` and the like are how CVE-2024-21626 reached host dirs; runc refuses them late.)
    """
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"working dir {path!r} must be an absolute path")
    if posixpath.normpath(path) != path or "//" in path:
        raise ValueError(
            f"working dir {path!r} must be normalised (no '.', '..', '//' or trailing '/'): "
            f"use {posixpath.normpath(path).replace('//', '/')!r}"
        )
    if path == "/proc" or path.startswith("/proc/"):
        raise ValueError(f"working dir {path!r} must not be under /proc")
IO_DIR_IN_CONTAINER = "/run/faasd-io"
AGENT_DIR_IN_CONTAINER = "/faasd/agent"
SECRETS_DIR_IN_CONTAINER = "/run/secrets"
OPENFAAS_SECRETS_DIR = "/var/openfaas/secrets"
"""Where OpenFaaS functions read their secrets; the same directory is mounted there too."""


class ImageConfigLike(Protocol):
    """What the runtime reads from ``faasd.images.ImageConfig`` (duck-typed to keep layers apart)."""

    @property
    def entrypoint(self) -> Sequence[str] | None: ...
    @property
    def cmd(self) -> Sequence[str] | None: ...
    @property
    def env(self) -> Sequence[str] | None: ...
    @property
    def working_dir(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox. ``None`` means unlimited for that resource."""

    memory_mb: int | None = 256
    """Memory limit (cgroup memory.limit_in_bytes)."""
    swap_mb: int = 0
    """Swap allowed beyond ``memory_mb`` (memsw = memory + swap); 0 = no swap."""
    cpu_cores: float | None = 1.0
    """CPU bandwidth: quota = cores x period (100 ms)."""
    cpu_shares: int = 1024
    """Relative CPU weight under contention."""
    pids: int | None = 256
    """Max processes+threads (contains fork bombs)."""
    disk_mb: int | None = 512
    """Size bound of the writable root layer (overlay upper)."""
    tmp_mb: int | None = 64
    """Size of the /tmp tmpfs (counts against memory: tmpfs pages are charged to the container)."""
    timeout_s: float | None = 30.0
    """Wall-clock limit of :meth:`SandboxManager.run` and the default of :meth:`Sandbox.wait`."""
    nofile: int = 1024
    """RLIMIT_NOFILE (soft = hard)."""
    disk_backend: Literal["auto", "tmpfs", "loop"] = "auto"
    """Filesystem of the writable layer. ``tmpfs``: fastest (mount ~3 ms), but its pages are charged to the
    sandbox's memory cgroup, so writing more than the free memory ends in an OOM kill rather than ENOSPC.
    ``loop``: a loop-mounted ext4 file, real disk semantics (ENOSPC at ``disk_mb``). ``auto`` takes tmpfs
    only when ``disk_mb`` fits comfortably in the memory limit (``disk_mb <= memory_mb / 2``, and at most
    1 GiB; ``faasd.rootfs.choose_backend``), so the defaults (512 MiB disk, 256 MiB memory) use loop.
    Measured cost of loop (2 shared cores, load ~6): mount median 15.5 ms vs 3.0 ms for tmpfs; a whole
    ``SandboxManager.run(["true"])`` median 156 ms vs 132 ms, i.e. ~+20-25 ms per cold start."""

    def validate(self) -> None:
        for name in ("memory_mb", "pids", "disk_mb", "tmp_mb"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InvalidInputError(f"limit {name} must be at least 1, got {v}")
        if self.memory_mb is not None and self.memory_mb < 6:
            raise InvalidInputError(f"memory_mb must be at least 6 MiB (runc needs it), got {self.memory_mb}")
        if self.swap_mb < 0:
            raise InvalidInputError(f"swap_mb must be >= 0, got {self.swap_mb}")
        if self.cpu_cores is not None and not 0.01 <= self.cpu_cores <= 1024:
            raise InvalidInputError(f"cpu_cores must be between 0.01 and 1024, got {self.cpu_cores}")
        if not 2 <= self.cpu_shares <= 262144:
            raise InvalidInputError(f"cpu_shares must be between 2 and 262144, got {self.cpu_shares}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidInputError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.nofile < 16:
            raise InvalidInputError(f"nofile must be at least 16, got {self.nofile}")
        if self.disk_backend not in ("auto", "tmpfs", "loop"):
            raise InvalidInputError(f"disk_backend must be auto, tmpfs or loop, got {self.disk_backend!r}")


@dataclass(frozen=True)
class NetworkSpec:
    """Network of a sandbox.

    * ``none``: own network namespace with only ``lo`` up (default).
    * ``loopback-proxy``: same isolation; the host reaches servers inside through setns
      (:func:`faasd.runtime.proxy.open_connection_in_netns` / :class:`LoopbackProxy`), no bridge.
    * ``egress``: a veth pair into the namespace with a private /30 and NAT to the outside.
    """

    mode: Literal["none", "egress", "loopback-proxy"] = "none"
    ports: tuple[int, ...] = ()
    """Ports inside the sandbox that callers intend to reach (informational for loopback-proxy)."""


USERNS_SIZE = 65536
"""Ids per sandbox user namespace: container uids/gids 0..65535 (``nobody`` = 65534 included)."""


@dataclass(frozen=True)
class UserNamespace:
    """The user namespace of a sandbox: container uid/gid ``k`` is host uid/gid ``host_id + k``, for
    ``0 <= k < size``; uids and gids use the same range. Ranges are allocated per sandbox, host-wide and
    never overlapping (:mod:`faasd.runtime.userns`), and never include host id 0.

    config.json is where every later step (exec, checkpoint, any restore path) reads it from:
    ``linux.uidMappings``/``gidMappings`` (:meth:`oci_mappings`, :meth:`from_config`).
    """

    host_id: int
    size: int = USERNS_SIZE

    def host_uid(self, uid: int) -> int:
        """The host id of container id ``uid`` (same for gids)."""
        if not 0 <= uid < self.size:
            raise InvalidInputError(f"id {uid} is outside the sandbox's user namespace (0..{self.size - 1})")
        return self.host_id + uid

    def oci_mappings(self) -> dict[str, list[dict[str, int]]]:
        one = [{"containerID": 0, "hostID": self.host_id, "size": self.size}]
        return {"uidMappings": one, "gidMappings": [dict(one[0])]}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> UserNamespace | None:
        """The user namespace an OCI config.json describes (``None``: the sandbox has none)."""
        linux = config.get("linux")
        if not isinstance(linux, Mapping):
            return None
        namespaces = linux.get("namespaces")
        if not isinstance(namespaces, list) or not any(
            isinstance(n, Mapping) and n.get("type") == "user" for n in namespaces
        ):
            return None
        maps = linux.get("uidMappings")
        if not isinstance(maps, list) or len(maps) != 1 or not isinstance(maps[0], Mapping):
            return None
        first = maps[0]
        host_id, size = first.get("hostID"), first.get("size")
        if first.get("containerID") != 0 or not isinstance(host_id, int) or not isinstance(size, int):
            return None
        return cls(host_id, size)


@dataclass(frozen=True)
class BindMount:
    """A host path bind-mounted into the sandbox, read-only unless ``readonly=False``."""

    source: Path
    target: str
    readonly: bool = True

    def validate(self) -> None:
        if not self.target.startswith("/") or ".." in Path(self.target).parts:
            raise InvalidInputError(
                f"bind mount target {self.target!r} must be an absolute path without '..'"
            )
        if not Path(self.source).exists():
            raise InvalidInputError(f"bind mount source {self.source} does not exist")


@dataclass
class SandboxSpec:
    """Everything needed to create one sandbox.

    ``args=None`` runs the image's entrypoint + cmd. ``env`` entries override the image's. ``user``
    (``name``, ``uid``, ``name:group``, ``uid:gid``) overrides the image's user; names are resolved
    through the sandbox's own /etc/passwd and /etc/group.
    """

    id: str
    lowers: list[Path]
    args: list[str] | None = None
    image_config: ImageConfigLike | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    limits: Limits = field(default_factory=Limits)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    mounts: list[BindMount] = field(default_factory=list)
    runtime: Literal["runc", "runsc"] = "runc"
    hostname: str | None = None
    readonly_rootfs: bool = False
    """Root read-only (writes only to /tmp and mounts). Default: writable overlay, size-bounded by disk_mb."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    userns: bool | None = None
    """Run in a user namespace of its own (:class:`UserNamespace`); ``None``: the daemon's setting
    (``FAASD_USERNS``). runc only: gVisor (runsc) has its own user model."""

    def validate(self) -> None:
        if not SANDBOX_ID_RE.match(self.id):
            raise InvalidInputError(
                f"sandbox id {self.id!r} must match {SANDBOX_ID_RE.pattern} (start with 'fd-', lowercase)"
            )
        if not self.lowers:
            raise InvalidInputError("sandbox spec needs at least one lower layer directory")
        try:
            check_env_names(self.env)
            if self.cwd is not None:
                check_working_dir(self.cwd)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self.limits.validate()
        for m in self.mounts:
            m.validate()
        if self.runtime not in ("runc", "runsc"):
            raise InvalidInputError(f"unknown runtime {self.runtime!r}; use 'runc' or 'runsc'")
        if self.network.mode not in ("none", "egress", "loopback-proxy"):
            raise InvalidInputError(f"unknown network mode {self.network.mode!r}")

    def resolved_args(self) -> list[str]:
        if self.args:
            return list(self.args)
        ic = self.image_config
        args = [*(ic.entrypoint or []), *(ic.cmd or [])] if ic is not None else []
        if not args:
            raise InvalidInputError("nothing to run: give args or an image with an entrypoint/cmd")
        return args

    def resolved_env(self) -> list[str]:
        env: dict[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        if self.image_config is not None:
            for item in self.image_config.env or []:
                k, _, v = item.partition("=")
                env[k] = v
        env.update(self.env)
        return [f"{k}={v}" for k, v in env.items()]

    def resolved_cwd(self) -> str:
        cwd = self.cwd or (self.image_config.working_dir if self.image_config is not None else None) or "/"
        if not cwd.startswith("/"):
            raise InvalidInputError(f"working directory {cwd!r} must be absolute")
        return cwd

    def resolved_user(self) -> str | None:
        return self.user or (self.image_config.user if self.image_config is not None else None) or None


@dataclass(frozen=True)
class ExitStatus:
    """How a sandbox's main process ended."""

    exit_code: int
    """Exit code, or 128+signal if killed by a signal (137 = SIGKILL, e.g. OOM)."""
    oom_killed: bool = False
    timed_out: bool = False
    signal: int | None = None
    pids_exhausted: bool = False
    """A fork failed on the pids limit while it was being waited for with ``watch_pids``; it was killed."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_ms: float
    oom_killed: bool = False
    timed_out: bool = False
    signal: int | None = None
    memory_limit_mb: int | None = None
    timeout_s: float | None = None
    pids_limit: int | None = None
    pids_exhausted: bool = False
    """A fork failed on the pids limit: the sandbox was killed at once (see :meth:`SandboxManager.run`)."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    pids_detected_ms: float | None = None
    """When the pids limit was seen hit, in ms after the process started (``pids_exhausted`` only)."""

    def raise_for_limits(self) -> None:
        """Raise :class:`ResourceLimitError` if the run hit its memory or wall-clock limit."""
        if self.pids_exhausted:
            raise pids_exhausted(self.pids_limit, "the sandbox", detected_ms=self.pids_detected_ms)
        if self.oom_killed:
            limit = f"{self.memory_limit_mb} MiB" if self.memory_limit_mb else "the sandbox's memory"
            raise ResourceLimitError(
                f"memory limit of {limit} exceeded: the process was killed by the OOM killer; "
                "raise the function's memory limit or use less memory",
                limit="memory",
                memory_mb=self.memory_limit_mb,
            )
        if self.timed_out:
            raise ResourceLimitError(
                f"wall-clock timeout of {self.timeout_s:g} s exceeded: the process was killed; "
                "raise the timeout or make the function faster",
                limit="timeout",
                timeout_s=self.timeout_s,
            )


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    oom_killed: bool = False
    """The sandbox's memory cgroup OOM-killed a process while the exec ran."""
    pids_exhausted: bool = False
    """A fork failed on the pids limit while the exec ran: its process group was killed at once."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    pids_detected_ms: float | None = None


@dataclass
class SandboxInfo:
    """One entry of :meth:`SandboxManager.list`."""

    id: str
    status: str
    """runc status (created/running/paused/stopped) or ``unknown`` when only leftovers exist."""
    pid: int | None
    bundle: Path
    owned: bool
    """True if a live :class:`Sandbox` object in this manager owns it."""
    runtime: str = "runc"
