"""The snapshot chains of instances: bounding a chain at a stop, dropping stop snapshots nothing uses.

Every stop adds one snapshot (one overlay lower) to the chain; once the chain is longer than
:data:`~faasd.snapshots.service.MAX_CHAIN_LENGTH` the stop flattens it (:func:`bound_chain`). Stop
snapshots of an instance that nothing references any more (no instance record, no function's
``branch_from``, no child snapshot) are deleted by :func:`drop_unused_stop_snapshots`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select

from faasd.errors import ConflictError, FaasdError, NotFoundError
from faasd.platform.functions import BRANCH_FROM_ANNOTATION
from faasd.snapshots.service import MAX_CHAIN_LENGTH, flatten_snapshot
from faasd.snapshots.store import SnapshotMeta, SnapshotStore
from faasd.state import Database, Function
from faasd.state.instance_models import Instance

log = logging.getLogger(__name__)

LABEL = "faasd.instance"
STOP_KIND = "instance-stop"


async def bound_chain(store: SnapshotStore, inst: Instance, top: str) -> str:
    """``top``, or a flattened copy of it when its chain is longer than ``MAX_CHAIN_LENGTH``.

    A failed flattening is logged and leaves the (correct, only longer) chain: the next stop
    tries again."""
    chain = await asyncio.to_thread(store.chain, top)
    if len(chain) <= MAX_CHAIN_LENGTH:
        return top
    ids = [s.id for s in chain]
    # keep the snapshot the instance was started from as the parent (a common base for merges of
    # its branches) when its own chain is short; otherwise flatten everything
    onto = inst.source_snapshot
    if onto not in ids[:-1] or ids.index(onto) + 1 > MAX_CHAIN_LENGTH // 2:
        onto = None
    tip = chain[-1]
    meta = SnapshotMeta(
        source_sandbox=tip.meta.source_sandbox,
        image_ref=tip.meta.image_ref or inst.image,
        limits={},
        labels={LABEL: inst.id, "kind": STOP_KIND},
    )
    try:
        flat = await asyncio.to_thread(flatten_snapshot, store, top, meta, onto=onto)
    except (FaasdError, OSError) as exc:
        log.warning(
            "flattening the %d snapshots of instance %s failed (kept): %s", len(chain), inst.id, exc
        )
        return top
    log.info("instance %s: flattened a chain of %d snapshots into %s", inst.id, len(chain), flat.id)
    return flat.id


def snapshot_refs(db: Database) -> set[str]:
    """Snapshot ids instance records and functions' ``branch_from`` name."""
    refs: set[str] = set()
    with db.session() as s:
        for row in s.scalars(select(Instance)):
            refs.update(x for x in (row.source_snapshot, row.fs_snapshot) if x)
        for fn in s.scalars(select(Function)):
            ref = (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION)
            if ref:
                refs.add(str(ref))
    return refs


async def drop_unused_stop_snapshots(db: Database, store: SnapshotStore, instance_id: str) -> list[str]:
    """Delete the stop snapshots of ``instance_id`` that nothing references (see
    :func:`delete_unreferenced`). Returns the ids deleted."""
    refs = snapshot_refs(db)
    return await asyncio.to_thread(delete_unreferenced, store, instance_id, refs)


def delete_unreferenced(store: SnapshotStore, instance_id: str, refs: set[str]) -> list[str]:
    """Delete the stop snapshots of ``instance_id`` that are not in ``refs``, not an ancestor of one
    and have no child (leaves first, so a chain goes link by link). Blocking (store I/O)."""
    deleted: list[str] = []
    try:
        referenced: set[str] = set()
        for ref in refs:
            referenced.add(ref)
            with contextlib.suppress(FaasdError):
                referenced.update(s.id for s in store.chain(ref))
        while True:
            progress = False
            for snap in store.heads():
                labels = snap.meta.labels
                if labels.get(LABEL) != instance_id or labels.get("kind") != STOP_KIND:
                    continue
                if snap.id in referenced:
                    continue
                try:
                    store.delete(snap.id)
                except (ConflictError, NotFoundError):
                    continue
                deleted.append(snap.id)
                progress = True
            if not progress:
                return deleted
    except FaasdError as exc:
        log.warning("dropping old snapshots of instance %s failed: %s", instance_id, exc)
        return deleted
