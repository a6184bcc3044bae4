"""What the platform records about snapshots: labels, worker info for restores, views.

* labels of function checkpoints (``faasd.kind=checkpoint``, ``faasd.function``, ``faasd.version``) and
  :func:`version_key` (what identifies a function version's checkpoint);
* ``meta.extra["worker"]`` (:func:`worker_info`): what a restore needs to wrap the copy in a
  :class:`~faasd.runtime.workers.Worker` again, read back with :func:`worker_spec` /
  :func:`worker_spec_info`; :func:`restore_limits`, :func:`check_seedable`;
* :class:`RestoredSandbox` (a sandbox restored by :class:`~faasd.platform.snapshots.SnapshotService`) and
  :func:`snapshot_dict` (the JSON view of a snapshot).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from faasd.errors import InvalidInputError
from faasd.platform.namespaces import NAMESPACE_LABEL
from faasd.platform.runtime_adapter import RuntimeWorker, function_network
from faasd.platform.worker_protocol import WorkerConfig
from faasd.runtime.models import Limits
from faasd.runtime.workers import Worker, WorkerSpec
from faasd.snapshots.manifest import SnapshotInfo
from faasd.snapshots.seeds import check_seed
from faasd.snapshots.store import Snapshot, SnapshotStore

KIND_LABEL = "faasd.kind"
FUNCTION_LABEL = "faasd.function"
VERSION_LABEL = "faasd.version"
CHECKPOINT_KIND = "checkpoint"
SNAPSHOT_ID_RE = re.compile(r"^snap-[A-Za-z0-9_-]{1,64}$")
AGENT_MODES = ("python", "node")
"""Worker modes whose agent reseeds PRNGs after a restore (a ``seed`` needs one of them)."""


RESTORED_OWNER = "restored"
"""Owner of the adoption records of restored/branched sandboxes (``faasd.platform.adoption``)."""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RestoredSandbox:
    """A sandbox started from a snapshot by :meth:`SnapshotService.restore` / :meth:`branch`."""

    id: str
    snapshot_id: str
    function: str | None
    worker: RuntimeWorker
    restore_ms: float
    seed: int | None = None
    copy_index: int = 0
    """Index of this copy in its branch (0 for a single restore)."""
    created_at: str = field(default_factory=_now)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    invocations: int = 0

    def record_data(self, worker: dict[str, Any]) -> dict[str, Any]:
        """What a daemon that re-adopts this sandbox needs to register it again (the ``data`` of its
        adoption record, owner :data:`RESTORED_OWNER`); ``worker``: its ``worker_info``."""
        return {
            "snapshot_id": self.snapshot_id,
            "function": self.function,
            "seed": self.seed,
            "copy_index": self.copy_index,
            "created_at": self.created_at,
            "restore_ms": self.restore_ms,
            "worker": dict(worker),
        }

    @classmethod
    def from_record(cls, sandbox_id: str, worker: RuntimeWorker, data: dict[str, Any]) -> RestoredSandbox:
        """The entry of a re-adopted sandbox, from :meth:`record_data`."""
        entry = cls(
            sandbox_id, str(data.get("snapshot_id") or ""), data.get("function"), worker,
            float(data.get("restore_ms") or 0.0), seed=data.get("seed"),
            copy_index=int(data.get("copy_index") or 0),
        )
        if data.get("created_at"):
            entry.created_at = str(data["created_at"])
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "snapshot_id": self.snapshot_id,
            "function": self.function,
            "alive": self.worker.alive,
            "restore_ms": self.restore_ms,
            "invocations": self.invocations,
            "seed": self.seed,
            "copy_index": self.copy_index,
            "created_at": self.created_at,
        }


def worker_info(worker: Worker, image: str | None = None, image_id: str | None = None) -> dict[str, Any]:
    """What a restore needs to wrap the copy in a :class:`Worker` again (kept in ``meta.extra``)."""
    spec = worker.spec
    return {
        "function": spec.function,
        "mode": spec.mode,
        "handler": spec.handler,
        "port": spec.port,
        "code_dir": spec.code_dir,
        "fork_per_request": spec.fork_per_request,
        "network": function_network(spec.network.mode).mode,
        "image": image,
        "image_id": image_id,
    }


def version_key(config: WorkerConfig, image_id: str) -> str:
    """Identifies a function version for checkpoints: everything that shapes the initialised worker."""
    data = {
        "image_id": image_id,
        "runtime": config.runtime,
        "handler": config.handler,
        "command": config.command,
        "port": config.port,
        "env": dict(config.env),
        "limits": [config.memory_mb, config.cpu_cores, config.pids, config.disk_mb, config.timeout_s],
    }
    if config.network != "none":  # keeps the keys of existing checkpoints of functions without network
        data["network"] = config.network
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def function_of(snap: SnapshotInfo) -> str | None:
    fn = snap.meta.function or (snap.meta.extra.get("worker") or {}).get("function")
    return str(fn) if fn else None


def snapshot_dict(
    snap: SnapshotInfo, *, children: Sequence[str] = (), users: Sequence[str] = ()
) -> dict[str, Any]:
    meta = snap.meta
    return {
        "id": snap.id,
        "created_at": snap.created,
        "parent": meta.parent,
        "function": function_of(snap),
        "source_sandbox": meta.source_sandbox,
        "kind": "process" if "criu" in snap.tree_names else "filesystem",
        "restorable": "criu" in snap.tree_names and "bundle" in snap.tree_names,
        "labels": {k: v for k, v in meta.labels.items() if k != NAMESPACE_LABEL},  # shown as "namespace"
        "sizes": asdict(snap.sizes),
        "merge": meta.extra.get("merge"),
        "children": list(children),
        "in_use_by": list(users),
    }


def worker_spec(store: SnapshotStore, snap: Snapshot, config: WorkerConfig | None = None) -> WorkerSpec:
    """How to talk to the agent of a restore of ``snap`` (from the newest ``worker`` info in its chain)."""
    info: dict[str, Any] = {}
    for link in reversed(store.chain(snap.id)):
        info = link.meta.extra.get("worker") or {}
        if info:
            break
    if not info:
        raise InvalidInputError(
            f"snapshot {snap.id} was not taken from a faasd worker; it cannot be restored as one"
        )
    return WorkerSpec(
        function=config.function if config is not None else str(info.get("function") or "snapshot"),
        lowers=[],
        mode=info.get("mode", "python"),
        handler=info.get("handler"),
        port=int(info.get("port") or 8080),
        code_dir=info.get("code_dir") or "/function",
        fork_per_request=bool(info.get("fork_per_request")),
        network=function_network(config.network if config is not None else info.get("network")),
    )


def worker_spec_info(store: SnapshotStore, snap: Snapshot) -> dict[str, Any]:
    """The newest ``worker`` info (:func:`worker_info`) in the chain of ``snap`` ({} if none)."""
    for link in reversed(store.chain(snap.id)):
        info = link.meta.extra.get("worker")
        if info:
            return dict(info)
    return {}


def restore_limits(config: WorkerConfig | None) -> Limits | None:
    """A restored worker's limits: those of the function it serves (None: as captured)."""
    return config.limits() if config is not None else None


def check_seedable(snap: Snapshot, spec: WorkerSpec, seed: int | None) -> None:
    check_seed(seed)
    if seed is not None and spec.mode not in AGENT_MODES:
        raise InvalidInputError(
            f"snapshot {snap.id} runs a function in mode {spec.mode!r}, which has no faasd agent to "
            "reseed its random generators; a seed needs a python or node function (restore or "
            "branch it without 'seed')",
            snapshot=snap.id,
            mode=spec.mode,
        )
