"""Snapshots of running gVisor instances (``isolation: "gvisor"``).

gVisor's checkpoint stops the sandbox it captures (:mod:`faasd.runtime.gvisor_checkpoint`: runsc's
``--leave-running`` does not work), while an instance snapshot promises that the instance keeps running.
So the instance's sandbox is checkpointed (stopped), restored under runsc from the snapshot just taken
as a new sandbox (same processes, memory and files; a new sandbox id), and that sandbox becomes the
instance's. The snapshot is the new sandbox's head: the instance's next snapshot or stop is its child.
If the restore fails the snapshot is kept and the instance is marked ``error`` (its old sandbox is gone);
so is it when the checkpoint fails after runsc stopped the sandbox.
"""

from __future__ import annotations

import contextlib
import secrets

from faasd.errors import ConflictError, FaasdError
from faasd.platform.instances.adoption import mark_adoptable
from faasd.platform.instances.registry import InstanceRegistry
from faasd.runtime.models import Limits
from faasd.runtime.sandbox import SandboxManager
from faasd.snapshots.service import continue_from, forget_sandbox, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import Snapshot, SnapshotMeta, SnapshotStore
from faasd.state.models import utcnow


async def snapshot_and_continue(
    registry: InstanceRegistry,
    store: SnapshotStore,
    manager: SandboxManager,
    instance_id: str,
    meta: SnapshotMeta,
    limits: Limits,
) -> Snapshot:
    """Checkpoint the gVisor instance ``instance_id`` and continue it from the snapshot taken."""
    # use() first: it takes the lock itself to resume an auto-paused instance
    async with registry.use(instance_id) as old, registry.lock(instance_id):
        live = registry.live.get(instance_id)
        if live is None or live.sandbox is not old:
            raise ConflictError(f"instance {instance_id} was stopped or restarted meanwhile; retry")
        try:
            snap = await snapshot_sandbox(store, old, meta, leave_running=False)
        except FaasdError as exc:
            # a checkpoint that failed after runsc stopped the sandbox leaves nothing to continue
            state: str | None = None
            with contextlib.suppress(FaasdError):
                state = (await old.runtime.state(old.id)).get("status")
            if state not in ("running", "paused"):
                registry.live.pop(instance_id, None)
                await old.destroy()
                forget_sandbox(store, old.id)
                registry.update(
                    instance_id,
                    status="error",
                    sandbox_id=None,
                    error=f"gVisor snapshot failed: {exc.message}",
                )
            raise
        new_id = "fd-i" + secrets.token_hex(8)
        try:
            restored = await restore_snapshot(
                store,
                snap.id,
                new_id,
                manager=manager,
                limits=limits,
                notify_agent=False,
                isolation="gvisor",
            )
        except FaasdError as exc:
            registry.live.pop(instance_id, None)
            registry.update(
                instance_id,
                status="error",
                sandbox_id=None,
                error=f"restoring after gVisor snapshot {snap.id} failed: {exc.message}",
            )
            raise
        finally:
            await old.destroy()
            forget_sandbox(store, old.id)
        live.sandbox = restored.sandbox
        mark_adoptable(restored.sandbox, instance_id)  # the instance's new sandbox outlives the daemon too
        continue_from(store, new_id, snap.id)
        registry.update(instance_id, sandbox_id=new_id, last_active_at=utcnow())
        return snap
