"""The typed seam between the snapshot layer and the runtime: what can be checkpointed.

:class:`Checkpointable` is what :mod:`faasd.snapshots` needs from a running sandbox (a
:class:`~faasd.runtime.sandbox.Sandbox` satisfies it, created or restored); :func:`checkpoint_source`
turns one into the :class:`CheckpointSource` (re-exported by :mod:`faasd.runtime.checkpoint`) that
:func:`~faasd.runtime.checkpoint.checkpoint` works on. No attribute probing: a sandbox without an
overlay upper is reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from faasd.rootfs.overlay import OverlayRootfs
from faasd.runtime.models import SandboxSpec
from faasd.runtime.runc import OciRuntime


@dataclass
class CheckpointSource:
    """What :func:`~faasd.runtime.checkpoint.checkpoint` needs to know about a sandbox."""

    id: str
    bundle: Path
    upper: Path | None
    runtime: OciRuntime
    lowers: list[Path] = field(default_factory=list)
    criu_direct: bool = False
    """Dump with CRIU directly when :func:`faasd.runtime.criu_dump.eligible` (else ``runc checkpoint``)."""
    criu_binary: str = "criu"


@runtime_checkable
class Checkpointable(Protocol):
    """A running sandbox whose processes (CRIU) and overlay upper can be captured."""

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> SandboxSpec: ...

    @property
    def bundle(self) -> Path: ...

    @property
    def runtime(self) -> OciRuntime: ...

    @property
    def rootfs(self) -> OverlayRootfs | None: ...

    @property
    def criu_direct(self) -> bool: ...

    @property
    def criu_binary(self) -> str: ...


def checkpoint_source(sandbox: Checkpointable) -> CheckpointSource:
    """What :func:`~faasd.runtime.checkpoint.checkpoint` needs to know about ``sandbox``."""
    rootfs = sandbox.rootfs
    lowers = list(rootfs.lowers) if rootfs is not None and rootfs.lowers else list(sandbox.spec.lowers)
    return CheckpointSource(
        id=sandbox.id,
        bundle=Path(sandbox.bundle),
        upper=rootfs.upper if rootfs is not None else None,
        runtime=sandbox.runtime,
        lowers=[Path(p) for p in lowers],
        criu_direct=sandbox.criu_direct,
        criu_binary=sandbox.criu_binary,
    )


def sandbox_lowers(sandbox: Checkpointable) -> list[Path]:
    """The read-only overlay lowers of ``sandbox`` (lowest first)."""
    return checkpoint_source(sandbox).lowers
