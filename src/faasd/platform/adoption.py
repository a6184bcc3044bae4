"""Sandboxes outlive the daemon: re-adoption at start-up, and letting go of them at a clean shutdown.

Start-up (:func:`adopt_all`, called by ``Platform.reconcile`` *before* orphans are cleaned up), per kind:

* **instances** (records with owner ``instance``, see :func:`faasd.runtime.adopt.write_record`): an
  instance whose sandbox still runs is re-adopted as it is -- same sandbox, processes, files, pause state;
  exposed ports listen again on the same host ports; the TTL clock continues from ``last_active_at``;
  its snapshot lineage is read back from the bundle. An instance whose sandbox *exited while no daemon
  was running* keeps every file it wrote: its writable layer is stored as a stop snapshot that becomes
  the instance's next base (like :meth:`InstanceService.stop`), the instance is ``stopped`` and its
  ``error`` says what happened. If nothing of the sandbox is left (the host rebooted: ``run_dir`` is a
  tmpfs), the instance is ``stopped`` on its last stop snapshot, and ``error`` says the files since were
  lost. An instance the daemon was still starting is rolled back to ``stopped`` (its half-started
  sandbox is removed).
* **restored/branched sandboxes** (owner ``restored``, written once a restore or a whole branch was
  acknowledged): re-adopted with their agent (it is asked for readiness again; it is *not* told it was
  restored, nothing was restored). One that exited while the daemon was down is removed (restored
  sandboxes are throw-away: their files were never kept). A branch interrupted half-way has no records:
  its copies are removed (rolled back), the request that made it failed.
* **warm pool workers, execute sandboxes and everything else** have no record: they are drained --
  ``cleanup_orphans`` removes them, the pools start fresh workers.

Clean shutdown (:func:`release_all`, ``Settings.keep_sandboxes_on_shutdown``, default true): instances
and restored sandboxes are let go without stopping them (listeners closed, pipes closed, not watched);
the next daemon adopts them. With the setting off they are stopped as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from faasd.errors import FaasdError, NotFoundError
from faasd.platform.instances import LABEL, STOP_KIND, InstanceService, _Live
from faasd.platform.runtime_adapter import RuntimeWorker, function_network
from faasd.platform.snapshots import RestoredSandbox, SnapshotService
from faasd.rootfs import mounts
from faasd.runtime.adopt import AdoptRecord, adopt, find_records, release
from faasd.runtime.sandbox import Sandbox
from faasd.runtime.workers import Worker, WorkerSpec
from faasd.snapshots.service import adopt_lineage, forget_sandbox, snapshot_upper
from faasd.snapshots.store import SnapshotMeta, SnapshotStore
from faasd.state.instance_models import Instance
from faasd.state.models import utcnow

log = logging.getLogger(__name__)

INSTANCE_OWNER = "instance"
RESTORED_OWNER = "restored"
_ACTIVE = ("starting", "running", "paused")


@dataclass
class AdoptionReport:
    adopted: list[str] = field(default_factory=list)
    """Sandbox ids re-adopted running or paused."""
    exited: list[str] = field(default_factory=list)
    """Sandbox ids that exited while no daemon was running (instances: writable layer kept)."""
    lost: list[str] = field(default_factory=list)
    """Instance ids whose sandbox was gone entirely, or rolled back mid-start."""
    staging_removed: list[str] = field(default_factory=list)
    """Half-written snapshots (staging dirs) of the previous daemon, removed."""


def clear_snapshot_staging(store: SnapshotStore) -> list[str]:
    """At start-up no snapshot of this daemon is being written: remove the staging dirs and files a
    killed daemon left in the store's ``tmp/`` (a snapshot interrupted mid-write is rolled back; it was
    never listed). Returns the names removed."""
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for p in store.tmp_dir.iterdir():
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


async def adopt_all(
    instances: InstanceService | None, snapshots: SnapshotService | None, *, skip_names: tuple[str, ...] = ()
) -> AdoptionReport:
    report = AdoptionReport()
    if snapshots is not None:
        report.staging_removed = await asyncio.to_thread(clear_snapshot_staging, snapshots.store)
    if instances is not None:
        await adopt_instances(instances, report, skip_names=skip_names)
    if snapshots is not None:
        await adopt_restored(snapshots, report)
    return report


# ---------------------------------------------------------------------------------------- instances
def _since(ts: datetime | None) -> float:
    """Seconds since ``ts`` (a stored UTC time, naive from SQLite), never negative."""
    if ts is None:
        return 0.0
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - ts).total_seconds())


async def adopt_instances(
    svc: InstanceService, report: AdoptionReport, *, skip_names: tuple[str, ...] = ()
) -> None:
    records = find_records(svc.manager, INSTANCE_OWNER)
    with svc.db.session() as s:
        rows = list(s.scalars(select(Instance).where(Instance.status.in_(_ACTIVE))))
    for inst in rows:
        if inst.id in svc._live or any((inst.name or "").startswith(p) for p in skip_names):
            continue
        rec = records.get(inst.sandbox_id or "")
        if rec is None or rec.data.get("instance") != inst.id or inst.status == "starting":
            why = (
                "the daemon stopped while the instance was starting; it was rolled back, start it again"
                if inst.status == "starting" or (rec is None and inst.sandbox_id is None)
                else None
            )
            await _instance_lost(svc, inst, report, why)
            continue
        try:
            async with svc._lock(inst.id):
                await _adopt_instance(svc, inst, rec, report)
        except (FaasdError, OSError) as exc:
            log.error("re-adopting instance %s failed: %s", inst.id, exc)
            with contextlib.suppress(FaasdError):
                svc._update(inst.id, status="stopped", sandbox_id=None, auto_paused=False,
                            error=f"re-adopting its sandbox after a daemon restart failed: {exc}")
            report.lost.append(inst.id)


async def _adopt_instance(
    svc: InstanceService, inst: Instance, rec: AdoptRecord, report: AdoptionReport
) -> None:
    got = await adopt(svc.manager, rec)
    if got is None:
        await _instance_lost(svc, inst, report, None)
        return
    sb = got.sandbox
    adopt_lineage(svc.store, sb.id, sb.bundle)
    if got.state in ("exited", "created"):
        await _keep_exited(svc, inst, sb, got.oom_killed, report)
        return
    live = _Live(sb)
    live.last_used = time.monotonic() - _since(inst.last_active_at)
    svc._live[inst.id] = live
    ports: list[dict[str, Any]] = []
    for p in inst.ports or []:
        want = p.get("host_port")
        try:
            ports.append(await svc._listen(inst.id, live, dict(p), want))
        except OSError as exc:
            log.warning("instance %s: host port %s of port %s is taken (%s); listening on a new one",
                        inst.id, want, p.get("internal_port"), exc)
            ports.append(await svc._listen(inst.id, live, dict(p), None))
    if got.state == "paused":
        # paused by a TTL (or caught mid-pause): a use resumes it, as for any auto-pause
        status, auto = "paused", inst.auto_paused if inst.status == "paused" else True
    else:
        status, auto = "running", False
    svc._update(inst.id, status=status, auto_paused=auto, ports=ports, error=None)
    report.adopted.append(sb.id)
    log.info("instance %s: re-adopted its %s sandbox %s", inst.id, status, sb.id)


async def _keep_exited(
    svc: InstanceService, inst: Instance, sb: Sandbox, oom: bool, report: AdoptionReport
) -> None:
    """The sandbox of ``inst`` ended while no daemon ran: store its writable layer as the next base."""
    new_base = inst.fs_snapshot
    kept = False
    try:
        upper = sb.rootfs.upper if sb.rootfs is not None else None
        if upper is not None and upper.is_dir() and any(upper.iterdir()):
            meta = SnapshotMeta(
                source_sandbox=sb.id,
                image_ref=inst.image,
                layers=[] if inst.fs_snapshot else [str(p) for p in sb.spec.lowers],
                limits={},
                parent=inst.fs_snapshot,
                labels={LABEL: inst.id, "kind": STOP_KIND},
            )
            snap = await asyncio.to_thread(
                snapshot_upper, svc.store, sb.id, list(sb.spec.lowers), upper, meta
            )
            new_base = await svc._bound_chain(inst, snap.id)
            kept = True
    finally:
        forget_sandbox(svc.store, sb.id)
        try:
            await sb.destroy()
        except FaasdError as exc:  # cleanup_orphans retries it
            log.error("removing the exited sandbox %s of instance %s failed: %s", sb.id, inst.id, exc)
    never = "was never started" if sb.status == "created" else "exited"
    cause = " (killed by the out-of-memory killer)" if oom else ""
    files = (
        f"the files it wrote were kept as snapshot {new_base}, the instance's next base"
        if kept
        else "it had written no files since the last stop"
    )
    svc._update(
        inst.id, status="stopped", auto_paused=False, sandbox_id=None, fs_snapshot=new_base,
        error=f"its sandbox {sb.id} {never} while the daemon was not running{cause}; {files}; "
        "start it again to continue",
    )
    report.exited.append(sb.id)
    log.warning("instance %s: sandbox %s %s while the daemon was down%s; files kept: %s",
                inst.id, sb.id, never, cause, kept)


async def _instance_lost(
    svc: InstanceService, inst: Instance, report: AdoptionReport, why: str | None
) -> None:
    new_base = inst.fs_snapshot
    if why is None:
        stored = _stop_snapshot_of(svc, inst)
        if stored is not None:
            # it was being stopped when the daemon died: its files were already stored
            new_base = stored
            why = f"the daemon stopped while the instance was stopping; its files were kept as {stored}"
        else:
            why = (
                f"its sandbox {inst.sandbox_id} was gone when the daemon restarted (was the host rebooted?); "
                "files written since the last stop were lost"
            )
    svc._update(
        inst.id, status="stopped", auto_paused=False, sandbox_id=None, fs_snapshot=new_base, error=why
    )
    report.lost.append(inst.id)
    log.warning("instance %s: %s", inst.id, why)


def _stop_snapshot_of(svc: InstanceService, inst: Instance) -> str | None:
    """A stop snapshot of the instance's last sandbox that no record points to yet (a stop interrupted
    after it stored the files)."""
    if not inst.sandbox_id:
        return None
    for snap in svc.store.list():
        labels = snap.meta.labels
        if (
            labels.get(LABEL) == inst.id
            and labels.get("kind") == STOP_KIND
            and snap.meta.source_sandbox == inst.sandbox_id
        ):
            return snap.id
    return None


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
        except FaasdError as exc:
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
        if got.state == "paused":
            with contextlib.suppress(FaasdError):
                await sb.resume()
        spec = _worker_spec(rec)
        try:
            worker = await Worker.attach(sb, spec, restored=False)
        except (FaasdError, OSError, TimeoutError) as exc:
            log.error("restored sandbox %s: its agent does not answer after the restart (%s); removed",
                      sb_id, exc)
            with contextlib.suppress(FaasdError):
                await sb.destroy()
            report.exited.append(sb_id)
            continue
        adopt_lineage(svc.store, sb_id, sb.bundle)
        rw = RuntimeWorker(worker, [])
        svc._remember(rw, dict(rec.data.get("worker") or {}))
        d = rec.data
        entry = RestoredSandbox(
            sb_id, str(d.get("snapshot_id") or ""), d.get("function"), rw, float(d.get("restore_ms") or 0.0),
            seed=d.get("seed"), copy_index=int(d.get("copy_index") or 0),
        )
        if d.get("created_at"):
            entry.created_at = str(d["created_at"])
        svc.sandboxes[sb_id] = entry
        report.adopted.append(sb_id)
        log.info("re-adopted restored sandbox %s (snapshot %s)", sb_id, entry.snapshot_id)


def restored_record_data(entry: RestoredSandbox, worker_info: dict[str, Any]) -> dict[str, Any]:
    """What :func:`adopt_restored` needs to register ``entry`` again (the ``data`` of its record)."""
    return {
        "snapshot_id": entry.snapshot_id,
        "function": entry.function,
        "seed": entry.seed,
        "copy_index": entry.copy_index,
        "created_at": entry.created_at,
        "restore_ms": entry.restore_ms,
        "worker": dict(worker_info),
    }


# ------------------------------------------------------------------------------------------- shutdown
async def _release_worker(worker: Worker) -> None:
    """Close the host side of a worker (counters, HTTP client), leaving its sandbox running."""
    worker._closed = True
    worker._oom.close()
    worker._pids.close()
    if worker._http is not None:
        with contextlib.suppress(Exception):
            await worker._http.aclose()
    await release(worker.sandbox)


async def release_all(instances: InstanceService | None, snapshots: SnapshotService | None) -> list[str]:
    """Let go of every live instance and restored sandbox without stopping them (clean shutdown with
    ``keep_sandboxes_on_shutdown``). Returns the sandbox ids left running."""
    left: list[str] = []
    if instances is not None:
        for inst_id in list(instances._live):
            async with instances._lock(inst_id):
                live = instances._live.pop(inst_id, None)
                if live is None:
                    continue
                for srv in live.servers.values():
                    srv.close()
                if live.sandbox.status not in ("running", "paused"):
                    instances._live[inst_id] = live  # it ended: stopped (files kept) by the usual close
                    continue
                with contextlib.suppress(NotFoundError):
                    instances._update(inst_id, last_active_at=utcnow())
                await release(live.sandbox)
                left.append(live.sandbox.id)
    if snapshots is not None:
        for sb_id, entry in list(snapshots.sandboxes.items()):
            worker = entry.worker.worker
            if not entry.worker.alive:
                continue
            snapshots.sandboxes.pop(sb_id, None)
            await _release_worker(worker)
            left.append(sb_id)
    if left:
        log.info("left %d sandbox(es) running for the next daemon: %s", len(left), left)
    return left
