"""Sandboxes outlive the daemon: what start-up re-adopts, what a clean shutdown leaves running.

Start-up (:func:`adopt_all`, called by ``Platform.reconcile`` *before* orphaned sandboxes are removed):

* **instances**: re-adopted with their processes, files, pause state, ports and TTL; one whose sandbox
  exited while no daemon ran keeps its writable layer as its next base (:mod:`faasd.platform.instances
  .adoption`).
* **restored/branched sandboxes** (records written once a restore or a *whole* branch succeeded,
  :func:`keep_restored`): re-adopted with their agent, which is asked for readiness again but not told
  it was restored (nothing was restored). One that exited while the daemon was down is removed (restored
  sandboxes are throw-away: their files were never kept). A branch cut short by the daemon's death has no
  records: its copies are removed as orphans (rolled back; the request that made it failed).
* **warm pool workers, warm execute sandboxes, one-off executions**: no record, so they are drained --
  ``cleanup_orphans`` removes them and the pools start fresh workers. (Re-adopting them would save one
  cold start each, but their pools' state -- queues, leases, direct-address sockets -- died with the
  daemon.)
* half-written snapshots: the staging dirs a killed daemon left in the snapshot store are removed
  (:func:`clear_snapshot_staging`); an interrupted snapshot is never listed.

Clean shutdown (:func:`release_all`, when ``Settings.keep_sandboxes_on_shutdown``, the default):
instances and restored sandboxes are let go without being stopped (listeners and pipes closed); the next
daemon adopts them. Pools stop their workers as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass, field

from faasd.errors import FaasdError
from faasd.platform.instances import InstanceService
from faasd.platform.runtime_adapter import RuntimeWorker, function_network
from faasd.platform.snapshot_meta import RESTORED_OWNER, RestoredSandbox
from faasd.platform.snapshots import SnapshotService
from faasd.rootfs import mounts
from faasd.runtime.adopt import AdoptRecord, adopt, find_records
from faasd.runtime.workers import Worker, WorkerSpec
from faasd.snapshots.service import adopt_lineage
from faasd.snapshots.store import SnapshotStore

log = logging.getLogger(__name__)


@dataclass
class AdoptionReport:
    adopted: list[str] = field(default_factory=list)
    """Sandbox ids re-adopted running or paused (instances and restored sandboxes)."""
    exited: list[str] = field(default_factory=list)
    """Sandbox ids that exited while no daemon was running (instances: writable layer kept)."""
    lost: list[str] = field(default_factory=list)
    """Instance ids whose sandbox was gone entirely, or rolled back mid-start."""
    staging_removed: list[str] = field(default_factory=list)
    """Half-written snapshots (staging entries) of the previous daemon, removed."""


async def adopt_all(
    instances: InstanceService | None, snapshots: SnapshotService | None, *, skip_names: tuple[str, ...] = ()
) -> AdoptionReport:
    report = AdoptionReport()
    if snapshots is not None:
        report.staging_removed = await asyncio.to_thread(clear_snapshot_staging, snapshots.store)
    if instances is not None:
        got = await instances.adopt(skip_names=skip_names)
        report.adopted += got.adopted
        report.exited += got.exited
        report.lost += got.lost
    if snapshots is not None:
        await adopt_restored(snapshots, report)
    if report.adopted or report.exited or report.lost:
        log.info("re-adopted %d sandbox(es) %s; exited while down: %s; instances lost: %s",
                 len(report.adopted), report.adopted, report.exited, report.lost)
    return report


def clear_snapshot_staging(store: SnapshotStore) -> list[str]:
    """At start-up no snapshot of this daemon is being written: remove the staging dirs and files a
    killed daemon left in the store's ``tmp/`` (the interrupted snapshot is rolled back; it was never
    listed). Returns the names removed."""
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for p in sorted(store.tmp_dir.iterdir()):
            if p.is_dir() and not p.is_symlink():
                if mounts.unmount_all_under(p):
                    continue  # never delete through a mount
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        log.warning("removed %d half-written snapshot staging entries: %s", len(removed), removed)
    return removed


# ----------------------------------------------------------------------------------- restored sandboxes
def _worker_spec(rec: AdoptRecord) -> WorkerSpec:
    info = rec.data.get("worker") or {}
    return WorkerSpec(
        function=str(info.get("function") or rec.data.get("function") or "snapshot"),
        lowers=list(rec.spec.lowers),
        mode=info.get("mode", "python"),
        handler=info.get("handler"),
        port=int(info.get("port") or 8080),
        code_dir=info.get("code_dir") or "/function",
        fork_per_request=bool(info.get("fork_per_request")),
        network=function_network(info.get("network")),
        limits=rec.spec.limits,
        sandbox_id=rec.spec.id,
    )


async def adopt_restored(svc: SnapshotService, report: AdoptionReport) -> None:
    for sb_id, rec in find_records(svc.manager, RESTORED_OWNER).items():
        if sb_id in svc.sandboxes:
            continue
        try:
            got = await adopt(svc.manager, rec)
        except (FaasdError, OSError) as exc:
            log.error("re-adopting restored sandbox %s failed: %s", sb_id, exc)
            continue
        if got is None:
            continue
        sb = got.sandbox
        if got.state not in ("running", "paused"):
            report.exited.append(sb_id)
            with contextlib.suppress(FaasdError):
                await sb.destroy()
            continue
        if got.state == "paused":  # caught frozen by a snapshot cut short
            with contextlib.suppress(FaasdError):
                await sb.resume()
        try:
            worker = await Worker.attach(sb, _worker_spec(rec), restored=False)
        except (FaasdError, OSError, TimeoutError) as exc:
            log.error("restored sandbox %s: its agent does not answer after the restart (%s); removed",
                      sb_id, exc)
            with contextlib.suppress(FaasdError):
                await sb.destroy()
            report.exited.append(sb_id)
            continue
        adopt_lineage(svc.store, sb_id, sb.bundle)
        rw = RuntimeWorker(worker, [])
        svc.remember(rw, dict(rec.data.get("worker") or {}))
        svc.sandboxes[sb_id] = RestoredSandbox.from_record(sb_id, rw, rec.data)
        report.adopted.append(sb_id)
        log.info("re-adopted restored sandbox %s (snapshot %s)", sb_id, rec.data.get("snapshot_id"))


# ------------------------------------------------------------------------------------------- shutdown
async def release_all(instances: InstanceService | None, snapshots: SnapshotService | None) -> list[str]:
    """Let go of every live instance and restored sandbox without stopping them (clean shutdown with
    ``keep_sandboxes_on_shutdown``). Returns the sandbox ids left running."""
    left: list[str] = []
    if instances is not None:
        left += await instances.release()
    if snapshots is not None:
        for sb_id, entry in list(snapshots.sandboxes.items()):
            if not entry.worker.alive:
                continue
            snapshots.sandboxes.pop(sb_id, None)
            await entry.worker.worker.release()
            left.append(sb_id)
    if left:
        log.info("left %d sandbox(es) running for the next daemon: %s", len(left), left)
    return left
