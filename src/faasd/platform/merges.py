"""Merges of branches: the one implementation behind ``POST /api/v1/merges``, job 5
(``merge_branches``) and ``faas merge``.

A branch is named by a snapshot id, an instance id (or the id of an instance's sandbox), or the id of
a sandbox restored from a snapshot (or a pool worker). Live branches are snapshotted now; since a
snapshot becomes its source's new base (:mod:`faasd.snapshots.service`), the usual flow works:
snapshot instance A -> branch B from that snapshot -> both change files -> merge A with B (base: the
snapshot B came from). A stopped instance contributes its files as of its last stop.

The merge itself (nearest common ancestor, three-way merge of the uppers, strategies) is
:func:`faasd.snapshots.service.merge_branches`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from faasd.errors import InvalidInputError, NotFoundError
from faasd.platform.instances import InstanceService
from faasd.platform.snapshots import SNAPSHOT_ID_RE, SnapshotService
from faasd.snapshots.merge import MergeReport
from faasd.snapshots.service import check_strategy, common_base, merge_snapshots
from faasd.snapshots.store import Snapshot, SnapshotMeta

MAX_BRANCHES = 32


@dataclass
class MergeResult:
    snapshot: Snapshot
    report: MergeReport
    base: str
    branches: list[str]
    """The snapshot id each ref was resolved to (in the order given)."""


class MergeService:
    """Resolves branch refs to snapshots and merges them (``instances`` is None without instances)."""

    def __init__(self, snapshots: SnapshotService, instances: InstanceService | None = None) -> None:
        self.snapshots = snapshots
        self.instances = instances

    async def resolve(self, ref: str, labels: dict[str, str] | None = None) -> str:
        """The snapshot id for a branch ref; live sandboxes and running instances are snapshotted now."""
        if SNAPSHOT_ID_RE.match(ref):
            self.snapshots.get(ref)
            return ref
        inst_id = self.instances.find(ref) if self.instances is not None else None
        if inst_id is not None:
            assert self.instances is not None
            inst = self.instances.get(inst_id)
            if inst.status in ("running", "paused"):
                return (await self.instances.snapshot(inst_id, labels=labels)).id
            if inst.fs_snapshot is None:
                raise InvalidInputError(
                    f"instance {inst_id} is {inst.status} and has no files of its own yet; start it",
                    instance=inst_id,
                )
            return inst.fs_snapshot
        try:
            return (await self.snapshots.create(sandbox_id=ref, labels=labels)).id
        except NotFoundError:
            raise NotFoundError(
                f"{ref!r} is not a snapshot, instance, restored sandbox or worker of this daemon",
                ref=ref,
            ) from None

    async def merge(
        self,
        refs: Sequence[str],
        *,
        strategy: str = "fail",
        labels: dict[str, str] | None = None,
    ) -> MergeResult:
        """Merge the branches ``refs`` (at least two) into a new filesystem snapshot, child of their
        nearest common ancestor. ``strategy="fail"`` raises :class:`~faasd.errors.ConflictError` (409)
        with ``details["report"]`` (every conflicting path, its kind and each side) on conflicts."""
        check_strategy(strategy)
        refs = list(refs)
        if len(refs) < 2 or len(set(refs)) != len(refs):
            raise InvalidInputError(
                "a merge needs at least two distinct branches (snapshots, instances or sandboxes)"
            )
        if len(refs) > MAX_BRANCHES:
            raise InvalidInputError(f"a merge takes at most {MAX_BRANCHES} branches, got {len(refs)}")
        ids = [await self.resolve(r, {"faasd.merge-branch": "true"}) for r in refs]
        if len(set(ids)) != len(ids):
            raise InvalidInputError(f"branches {refs} name the same snapshot twice ({ids})")
        store = self.snapshots.store
        async with self.snapshots.op("merge"):
            base = await asyncio.to_thread(common_base, store, ids)
            meta = SnapshotMeta(labels=dict(labels or {}))
            meta.function = self.snapshots.function_of_base(base)
            snap, report = await asyncio.to_thread(
                merge_snapshots, store, base, ids, strategy=strategy, meta=meta
            )
        return MergeResult(snapshot=snap, report=report, base=base, branches=ids)
