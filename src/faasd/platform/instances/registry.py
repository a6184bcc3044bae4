"""The instances table and this daemon's running instances: records, locks, and :meth:`use`.

:class:`InstanceRegistry` is what every part of the instance service shares: the database rows
(:class:`~faasd.state.instance_models.Instance`), the live sandbox of each running instance
(:class:`LiveInstance`) and one lock per instance for state changes. :meth:`InstanceRegistry.use` hands
out the running sandbox for one operation (resuming an auto-paused instance first, keeping the TTL from
pausing it while in use).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from faasd.errors import ConflictError, FaasdError, NotFoundError
from faasd.runtime.sandbox import Sandbox
from faasd.state import Database
from faasd.state.instance_models import Instance
from faasd.state.models import iso, utcnow


@dataclass
class LiveInstance:
    """A running (or paused) instance of this daemon: its sandbox and exposed port listeners."""

    sandbox: Sandbox
    servers: dict[int, asyncio.Server] = field(default_factory=dict)
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def instance_dict(inst: Instance) -> dict[str, Any]:
    return {
        "id": inst.id,
        "namespace": inst.namespace,
        "name": inst.name,
        "image": inst.image,
        "source_snapshot": inst.source_snapshot,
        "fs_snapshot": inst.fs_snapshot,
        "status": inst.status,
        "auto_paused": inst.auto_paused,
        "sandbox_id": inst.sandbox_id,
        "cpu_cores": inst.cpu_cores,
        "memory_mb": inst.memory_mb,
        "disk_gb": inst.disk_gb,
        "pids": inst.pids,
        "isolation": inst.isolation or "runc",
        "ttl_s": inst.ttl_s,
        "env": dict(inst.env or {}),
        "ports": list(inst.ports or []),
        "error": inst.error,
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
        "last_active_at": iso(inst.last_active_at),
    }


class InstanceRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.live: dict[str, LiveInstance] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -------------------------------------------------------------------------- db helpers
    def get(self, instance_id: str) -> Instance:
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None:
                raise NotFoundError(
                    f"instance {instance_id!r} does not exist; list instances to see ids",
                    instance=instance_id,
                )
            return inst

    def list(self) -> builtins.list[Instance]:
        with self.db.session() as s:
            return builtins.list(s.scalars(select(Instance).order_by(Instance.created_at)))

    def update(self, instance_id: str, **values: Any) -> Instance:
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None:
                raise NotFoundError(f"instance {instance_id!r} does not exist")
            for k, v in values.items():
                setattr(inst, k, v)
            return inst

    def find(self, ref: str) -> str | None:
        """The instance id for an instance id or the id of an instance's current sandbox."""
        with self.db.session() as s:
            if s.get(Instance, ref) is not None:
                return ref
            row = s.scalars(select(Instance).where(Instance.sandbox_id == ref)).first()
            return row.id if row is not None else None

    def lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    def forget_lock(self, instance_id: str) -> None:
        self._locks.pop(instance_id, None)

    def sandbox_of(self, instance_id: str) -> Sandbox:
        live = self.live.get(instance_id)
        if live is None:
            inst = self.get(instance_id)
            raise ConflictError(
                f"instance {instance_id} is {inst.status}; start it first",
                instance=instance_id,
                status=inst.status,
            )
        return live.sandbox

    # ---------------------------------------------------------------------------------- use
    @contextlib.asynccontextmanager
    async def use(self, instance_id: str) -> AsyncIterator[Sandbox]:
        """The running sandbox of an instance for one operation: resumes an auto-paused instance,
        keeps the TTL from pausing it while in use."""
        inst = self.get(instance_id)
        live = self.live.get(instance_id)
        if live is None:
            raise ConflictError(
                f"instance {instance_id} is {inst.status}; start it first "
                f"(POST /api/v1/instances/{instance_id}/start)",
                instance=instance_id,
                status=inst.status,
            )
        live.busy += 1
        try:
            if inst.status == "paused":
                if not inst.auto_paused:
                    raise ConflictError(
                        f"instance {instance_id} is paused; resume it first",
                        instance=instance_id,
                        status="paused",
                    )
                async with self.lock(instance_id):
                    cur = self.get(instance_id)
                    if cur.status == "paused" and cur.auto_paused:
                        await live.sandbox.resume()
                        self.update(instance_id, status="running", auto_paused=False)
            live.last_used = time.monotonic()
            yield live.sandbox
        finally:
            live.busy -= 1
            live.last_used = time.monotonic()
            with contextlib.suppress(FaasdError):
                self.update(instance_id, last_active_at=utcnow())
