"""Instances outlive the daemon: re-adoption at start-up, letting go at a clean shutdown.

Every instance sandbox carries an adoption record (:func:`faasd.runtime.adopt.write_record`, owner
:data:`OWNER`, data ``{"instance": id}``), written as soon as it started. At start-up
(:func:`adopt_instances`, before orphaned sandboxes are removed), for each instance the database shows
``starting``/``running``/``paused``:

* its sandbox still runs: re-adopted as it is -- same sandbox, processes, files and pause state; exposed
  ports listen again on the same host ports; the TTL clock continues from ``last_active_at``; the snapshot
  lineage is read back from the bundle. A sandbox caught frozen while the database says ``running`` (a
  pause or a CRIU dump cut short) comes back auto-paused: the next use resumes it.
* its sandbox exited while no daemon ran: the writable layer is stored as a stop snapshot that becomes
  the instance's next base (exactly like :meth:`InstanceService.stop`), the instance is ``stopped`` and
  ``error`` says what happened (an OOM kill included).
* nothing of it is left in run_dir (the host rebooted: run_dir is a tmpfs): its writable layer is
  recovered from its loop-backed disk in ``data_dir/scratch`` if it had one (:func:`_salvage_disk`) and
  becomes the next base; otherwise the instance is ``stopped`` on its last stop snapshot (or on the stop
  snapshot an interrupted stop already stored) and ``error`` says the files since were lost.
* it was still ``starting``: rolled back to ``stopped`` (its half-started sandbox has no record that
  matches and is removed as an orphan).

:func:`release_instances` (clean shutdown with ``keep_sandboxes_on_shutdown``) closes the port listeners
and lets go of every live sandbox without stopping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from faasd.errors import FaasdError
from faasd.platform.instances import ports
from faasd.platform.instances.chain import LABEL, STOP_KIND, bound_chain
from faasd.platform.instances.registry import InstanceRegistry, LiveInstance
from faasd.rootfs import mounts
from faasd.rootfs.overlay import mount_scratch_readonly, scratch_image
from faasd.runtime.adopt import AdoptRecord, adopt, find_records, release, write_record
from faasd.runtime.sandbox import Sandbox, SandboxManager
from faasd.snapshots.service import adopt_lineage, forget_sandbox, snapshot_upper
from faasd.snapshots.store import SnapshotMeta, SnapshotStore
from faasd.state.instance_models import Instance
from faasd.state.models import utcnow

log = logging.getLogger(__name__)

OWNER = "instance"
_ACTIVE = ("starting", "running", "paused")


@dataclass
class InstanceAdoption:
    adopted: list[str] = field(default_factory=list)
    """Sandbox ids re-adopted running or paused."""
    exited: list[str] = field(default_factory=list)
    """Sandbox ids that exited while no daemon ran (their writable layers were kept)."""
    lost: list[str] = field(default_factory=list)
    """Instance ids stopped because nothing of their sandbox was left, or rolled back mid-start."""


def mark_adoptable(sb: Sandbox, instance_id: str) -> None:
    """Record that ``sb`` is the sandbox of ``instance_id`` (the next daemon re-adopts it)."""
    try:
        write_record(sb, OWNER, {"instance": instance_id})
    except OSError as exc:  # the instance runs; only a daemon restart would stop it
        log.warning("instance %s: could not write the adoption record of %s: %s", instance_id, sb.id, exc)


def _since(ts: datetime | None) -> float:
    """Seconds since ``ts`` (a stored UTC time, naive from SQLite), never negative."""
    if ts is None:
        return 0.0
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - ts).total_seconds())


async def adopt_instances(
    registry: InstanceRegistry,
    manager: SandboxManager,
    store: SnapshotStore,
    *,
    skip_names: tuple[str, ...] = (),
    disks: ScratchDisks | None = None,
) -> InstanceAdoption:
    report = InstanceAdoption()
    records = find_records(manager, OWNER)
    with registry.db.session() as s:
        rows = list(s.scalars(select(Instance).where(Instance.status.in_(_ACTIVE))))
    for inst in rows:
        if inst.id in registry.live or any((inst.name or "").startswith(p) for p in skip_names):
            continue
        rec = records.get(inst.sandbox_id or "")
        if inst.status == "starting" or rec is None or rec.data.get("instance") != inst.id:
            why = None
            if inst.status == "starting" or inst.sandbox_id is None:
                why = "the daemon stopped while the instance was starting; it was rolled back, start it again"
            await _lost(registry, store, inst, report, why, disks)
            continue
        try:
            async with registry.lock(inst.id):
                await _adopt_one(registry, manager, store, inst, rec, report, disks)
        except (FaasdError, OSError) as exc:
            log.error("re-adopting instance %s failed: %s", inst.id, exc)
            with contextlib.suppress(FaasdError):
                registry.update(
                    inst.id, status="stopped", sandbox_id=None, auto_paused=False,
                    error=f"re-adopting its sandbox after a daemon restart failed: {exc}",
                )
            report.lost.append(inst.id)
    return report


async def _adopt_one(
    registry: InstanceRegistry,
    manager: SandboxManager,
    store: SnapshotStore,
    inst: Instance,
    rec: AdoptRecord,
    report: InstanceAdoption,
    disks: ScratchDisks | None,
) -> None:
    got = await adopt(manager, rec)
    if got is None:
        await _lost(registry, store, inst, report, None, disks)
        return
    sb = got.sandbox
    adopt_lineage(store, sb.id, sb.bundle)
    if got.state in ("exited", "created"):
        await _keep_exited(registry, store, inst, sb, got.oom_killed, report, never=got.state == "created")
        return
    live = LiveInstance(sb)
    live.last_used = time.monotonic() - _since(inst.last_active_at)
    registry.live[inst.id] = live
    exposed: list[dict[str, Any]] = []
    for p in inst.ports or []:
        want = p.get("host_port")
        try:
            exposed.append(await ports.listen(registry, inst.id, live, dict(p), want))
        except OSError as exc:
            log.warning("instance %s: host port %s (port %s) is taken (%s); listening on a new one",
                        inst.id, want, p.get("internal_port"), exc)
            exposed.append(await ports.listen(registry, inst.id, live, dict(p), None))
    if got.state == "paused":
        # paused by its TTL, or caught frozen mid-pause/mid-dump: a use resumes it like any auto-pause
        status, auto = "paused", inst.auto_paused if inst.status == "paused" else True
    else:
        status, auto = "running", False
    registry.update(inst.id, status=status, auto_paused=auto, ports=exposed, error=None)
    report.adopted.append(sb.id)
    log.info("instance %s: re-adopted its %s sandbox %s", inst.id, status, sb.id)


async def _keep_exited(
    registry: InstanceRegistry,
    store: SnapshotStore,
    inst: Instance,
    sb: Sandbox,
    oom: bool,
    report: InstanceAdoption,
    *,
    never: bool = False,
) -> None:
    """The sandbox of ``inst`` ended (``never``: was never started) while no daemon ran: its writable
    layer becomes the next base."""
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
            snap = await asyncio.to_thread(snapshot_upper, store, sb.id, list(sb.spec.lowers), upper, meta)
            new_base = await bound_chain(store, inst, snap.id)
            kept = True
    finally:
        forget_sandbox(store, sb.id)
        try:
            await sb.destroy()
        except FaasdError as exc:  # its bundle stays: cleanup_orphans finishes the job
            log.error("removing the exited sandbox %s of instance %s failed: %s", sb.id, inst.id, exc)
    what = "was never started" if never else "exited"
    cause = " (killed by the out-of-memory killer)" if oom else ""
    files = (
        f"the files it wrote were kept as snapshot {new_base}, the instance's next base"
        if kept
        else "it had written no files since the last stop"
    )
    registry.update(
        inst.id, status="stopped", auto_paused=False, sandbox_id=None, fs_snapshot=new_base,
        error=f"its sandbox {sb.id} {what} while the daemon was not running{cause}; {files}; "
        "start it again to continue",
    )
    report.exited.append(sb.id)
    log.warning("instance %s: sandbox %s %s while the daemon was down%s; files kept: %s",
                inst.id, sb.id, what, cause, kept)


async def _lost(
    registry: InstanceRegistry,
    store: SnapshotStore,
    inst: Instance,
    report: InstanceAdoption,
    why: str | None,
    disks: ScratchDisks | None = None,
) -> None:
    new_base = inst.fs_snapshot
    if why is None:
        stored = _stop_snapshot_of(store, inst)
        salvaged = None
        if stored is None and disks is not None:
            salvaged = await _salvage_disk(store, inst, disks)
        if stored is not None:
            new_base = stored
            why = f"the daemon stopped while the instance was stopping; its files were kept as {stored}"
        elif salvaged is not None:
            new_base = salvaged
            why = (
                f"its sandbox {inst.sandbox_id} was gone when the daemon restarted (was the host rebooted?); "
                f"the files it wrote were recovered from its disk as snapshot {salvaged}, the instance's "
                "next base; start it again to continue"
            )
        else:
            why = (
                f"its sandbox {inst.sandbox_id} was gone when the daemon restarted (was the host rebooted?); "
                "files written since the last stop were lost"
            )
    registry.update(
        inst.id, status="stopped", auto_paused=False, sandbox_id=None, fs_snapshot=new_base, error=why
    )
    report.lost.append(inst.id)
    log.warning("instance %s: %s", inst.id, why)


@dataclass(frozen=True)
class ScratchDisks:
    """Where loop-backed sandbox disks live (they outlive run_dir), and the image layers of an image ref
    (the lowers of an instance that has no snapshot yet)."""

    image_dir: Path
    run_dir: Path
    image_layers: Callable[[str], list[Path]]


async def _salvage_disk(store: SnapshotStore, inst: Instance, disks: ScratchDisks) -> str | None:
    """The run_dir state of the instance's sandbox is gone (host reboot) but its loop-backed disk is not:
    store the writable layer on it as a stop snapshot, remove the disk. Returns the snapshot id."""
    sb_id = inst.sandbox_id or ""
    image = scratch_image(disks.image_dir, sb_id)
    if not sb_id or not image.is_file() or (disks.run_dir / "sandboxes" / sb_id).exists():
        return None
    target = disks.image_dir / f".salvage-{sb_id}"
    snap_id: str | None = None
    try:
        upper = await asyncio.to_thread(mount_scratch_readonly, image, target)
        if upper is not None and any(upper.iterdir()):
            layers = [] if inst.fs_snapshot else [str(p) for p in disks.image_layers(inst.image or "")]
            meta = SnapshotMeta(
                source_sandbox=sb_id, image_ref=inst.image, layers=layers, limits={},
                parent=inst.fs_snapshot, labels={LABEL: inst.id, "kind": STOP_KIND},
            )
            snap = await asyncio.to_thread(snapshot_upper, store, sb_id, [], upper, meta)
            snap_id = await bound_chain(store, inst, snap.id)
    except (FaasdError, OSError) as exc:
        log.error("instance %s: recovering the files of %s from %s failed: %s", inst.id, sb_id, image, exc)
        return None
    finally:
        left = await asyncio.to_thread(mounts.unmount_all_under, target)
        if not left:
            with contextlib.suppress(OSError):
                target.rmdir()
    if snap_id is not None or not left:
        image.unlink(missing_ok=True)
    return snap_id


def _stop_snapshot_of(store: SnapshotStore, inst: Instance) -> str | None:
    """The stop snapshot of the instance's last sandbox, if a stop interrupted by the daemon's death
    stored one before it could record it."""
    if not inst.sandbox_id:
        return None
    for snap in store.heads():
        labels = snap.meta.labels
        if (
            labels.get(LABEL) == inst.id
            and labels.get("kind") == STOP_KIND
            and snap.meta.source_sandbox == inst.sandbox_id
        ):
            return snap.id
    return None


async def release_instances(registry: InstanceRegistry) -> list[str]:
    """Let go of every live instance without stopping it (clean shutdown that keeps sandboxes running).
    Returns the sandbox ids left running; instances whose sandbox already ended stay for ``close``."""
    left: list[str] = []
    for inst_id in list(registry.live):
        async with registry.lock(inst_id):
            live = registry.live.get(inst_id)
            if live is None or live.sandbox.status not in ("running", "paused"):
                continue
            registry.live.pop(inst_id)
            for srv in live.servers.values():
                srv.close()
            await release(live.sandbox)
            left.append(live.sandbox.id)
    return left
