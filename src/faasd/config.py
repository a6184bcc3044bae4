"""Where faasd keeps its state, and the knobs an operator can turn (environment: ``FAASD_*``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

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

    max_payload_bytes: int = 6 * 1024 * 1024
    keep_alive_s: float = 75.0
    """How long the API keeps an idle HTTP connection open. Longer than clients keep theirs idle (the SDK:
    5 s, httpx and Node: 5 s), so a client never sends a request on a connection the server is closing
    at that moment (the client would see "server disconnected without sending a response")."""
    runc_binary: str = "runc"
    runsc_binary: str = "runsc"
    criu_binary: str = "criu"
    userns: bool = True
    """Run every runc sandbox in its own user namespace: root inside is an unprivileged host id range
    (``faasd.runtime.userns``). A sandbox spec can override it (``SandboxSpec.userns``)."""

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
    def sandboxes_dir(self) -> Path:
        return self.run_dir / "sandboxes"

    @property
    def runc_root(self) -> Path:
        return self.run_dir / "runc"
