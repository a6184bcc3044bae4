"""Where faasd keeps its state, and the knobs an operator can turn (environment: ``FAASD_*``)."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAASD_", extra="ignore")

    data_dir: Path = Path("/var/lib/faasd")
    """Persistent state: content store, unpacked layers, snapshots, the SQLite database."""

    run_dir: Path = Path("/run/faasd")
    """Volatile state: runc root, sandbox bundles and overlay mounts, agent sockets."""

    cache_dir: Path = Path("/var/cache/faasd")
    """Rebuildable artefacts, e.g. the base runtime images built with debootstrap."""

    database_url: str | None = None
    """SQLAlchemy URL; default is SQLite at ``data_dir/faasd.db``."""

    host: str = "127.0.0.1"
    port: int = 8080
    auth: bool = True
    """When false the API accepts unauthenticated requests (local use only)."""
    function_auth: bool = False
    """When true the OpenFaaS invocation routes ``/function/*`` and ``/async-function/*`` need an API key
    (scope ``invoke``) like the rest of the API. Off by default, as in the OpenFaaS gateway: faas-cli never
    sends credentials there and functions do their own authentication."""

    max_payload_bytes: int = 6 * 1024 * 1024
    keep_alive_s: float = 75.0
    """How long the API keeps an idle HTTP connection open. Longer than clients keep theirs idle (the SDK:
    5 s, httpx and Node: 5 s), so a client never sends a request on a connection the server is closing
    at that moment (the client would see "server disconnected without sending a response")."""
    disk_reserve_mb: int = 2048
    """Free space of data_dir's filesystem that no sandbox's disk limit may claim: a requested ``disk_mb``
    above (free - reserve) is refused with a 400 before anything is created."""
    snapshot_image_cache_mb: int = 1024
    """Memory (a tmpfs) for the process images of snapshots unpacked from the store: a restore from the
    store writes a snapshot's CRIU images there instead of to data_dir's disk, the least recently used
    going first when full (``faasd.snapshots.image_cache``). 0: they are unpacked to disk. Emptied when the
    daemon stops."""
    snapshot_image_cache_dir: Path | None = None
    """Where that memory is: a directory on a tmpfs (default ``/dev/shm/faasd-snapimg-<hash of data_dir>``;
    not on a tmpfs: the cache is off)."""
    cgroup_favordynmods: bool = True
    """Mount the host's cgroup2 hierarchy with ``favordynmods`` (once, when a sandbox manager starts): moving
    a sandbox's task into its cgroups, at every start and restore, then no longer waits for an RCU grace
    period (~13 ms measured per start; ``faasd.runtime.cgroup_moves``). A host-wide kernel setting that stays
    until reboot; False leaves the host's cgroup mounts alone."""
    isolation: Literal["runc", "gvisor"] = "runc"
    """Default isolation backend of functions, instances and executes that do not name one: ``runc``
    (namespaces + seccomp on the host kernel) or ``gvisor`` (``runsc``: a user-space kernel)."""
    runc_binary: str = "runc"
    registry_auth_file: Path | None = None
    """A docker-style ``config.json`` with registry credentials, read before ``$DOCKER_CONFIG/config.json``
    and ``~/.docker/config.json``."""
    registry_mirrors: dict[str, str] = {}
    """Registry host -> mirror host (``{"docker.io": "mirror.local:5000"}``): pulls go to the mirror."""
    insecure_registries: list[str] = []
    """Registry hosts that may be reached over plain HTTP (loopback hosts always may)."""
    pull_missing_images: bool = True
    """Deploy, execute and instances pull an image that is not in the store from its registry."""
    runsc_binary: str = "runsc"
    criu_binary: str = "criu"
    criu_direct: bool = True
    """Checkpoints and restores of runc sandboxes run CRIU directly (:mod:`faasd.runtime.criu_dump`,
    :mod:`faasd.runtime.criu_restore`: faasd writes runc's record of a restored copy itself), which takes
    about half of ``runc checkpoint``/``runc restore``'s time for a small program. False: always through
    runc. Snapshots taken before faasd kept runc's record, sandboxes without a user namespace and
    cgroup-v2-only hosts go through runc either way."""
    gateway_handoff: bool = True
    """The gateway hands a new connection whose first request invokes a function with a warm Python worker
    to that worker (:mod:`faasd.api.handoff`): later requests on it skip the daemon. False: the daemon
    serves every request."""
    ephemeral_spare_ttl_s: float = 60.0
    """An ``ephemeral`` function's next sandbox is created (not started) after each invocation's start,
    for the next one (:mod:`faasd.platform.spares`); unused this long it is destroyed. 0: no spares."""
    gateway_relay: bool = True
    """With the hand-off on, a connection whose first request invokes such a worker with an API key (the
    SDK, ``faas``) is relayed to it: the daemon checks and removes the key from each request and the
    worker serves it (:mod:`faasd.api.relay`). False: the daemon serves keyed requests itself."""
    direct_pool: str = "127.77.0.0/16"
    """Direct function addresses are taken from this range (must lie inside 127.0.0.0/8; added to
    ``lo`` with the label ``lo:faas``). Empty: functions get no direct address."""
    direct_port: int = 80
    """The TCP port every direct function address listens on."""
    userns: bool = True
    """Run every runc sandbox in its own user namespace: root inside is an unprivileged host id range
    (``faasd.runtime.userns``). A sandbox spec can override it (``SandboxSpec.userns``)."""
    keep_sandboxes_on_shutdown: bool = True
    """A clean shutdown (SIGTERM, an upgrade) leaves instances and restored sandboxes running, and the
    next daemon re-adopts them (``faasd.runtime.adopt``), as it does after a crash. False: they are
    stopped at shutdown (instances keep their files as a stop snapshot). Warm pool workers are always
    drained (stopped at shutdown, removed at start-up after a crash)."""

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'faasd.db'}"

    # Layout of data_dir (containerd-like): blobs by digest, unpacked layers, image metadata.
    @property
    def content_dir(self) -> Path:
        return self.data_dir / "content"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def layers_dir(self) -> Path:
        return self.data_dir / "layers"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def image_cache_dir(self) -> Path:
        """``snapshot_image_cache_dir``, or its default for this data dir."""
        if self.snapshot_image_cache_dir is not None:
            return self.snapshot_image_cache_dir
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/dev/shm") / f"faasd-snapimg-{digest}"

    @property
    def sandboxes_dir(self) -> Path:
        return self.run_dir / "sandboxes"

    @property
    def runc_root(self) -> Path:
        return self.run_dir / "runc"
