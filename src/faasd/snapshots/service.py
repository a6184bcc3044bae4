"""Snapshot, restore, branch and merge sandboxes: the runtime's checkpoint/restore plus the store.

* :func:`snapshot_sandbox` -- checkpoint a running sandbox (it keeps running) into the store. If the
  sandbox itself was restored from a snapshot, its upper holds only the changes since then: the new
  snapshot's ``parent`` is that snapshot (nested branches = a chain of uppers).
* :func:`restore_snapshot` / :func:`branch` -- start one / several new sandboxes from a snapshot; each
  gets its own empty upper over the shared, read-only materialised snapshot uppers (copy-on-write).
* :func:`flatten_snapshot` -- the same filesystem (and process image) as a snapshot, with the
  links of its chain (above an ancestor, or all of them) merged into one upper: bounds the overlay
  lowers of long chains (persistent instances stopped and started many times; :data:`MAX_CHAIN_LENGTH`).
* :func:`merge_snapshots` -- three-way merge of the uppers of branch snapshots taken from sandboxes
  restored from the same base; the result is a filesystem-only snapshot (no CRIU image) whose parent
  is the base.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from faasd.errors import InvalidInputError
from faasd.runtime import Limits, SandboxManager
from faasd.runtime.checkpoint import Restored, SnapshotDirs, checkpoint, restore
from faasd.snapshots.merge import MergeReport, flatten_uppers, merge_uppers
from faasd.snapshots.store import Snapshot, SnapshotMeta, SnapshotStore

MAX_CHAIN_LENGTH = 8
"""Longest snapshot chain (snapshots, each adding one overlay lower) a persistent instance keeps; a
longer one is flattened into a single snapshot (:func:`flatten_snapshot`)."""


async def snapshot_sandbox(
    store: SnapshotStore, sandbox: Any, meta: SnapshotMeta | None = None, *, leave_running: bool = True
) -> Snapshot:
    """Checkpoint ``sandbox`` and store it; returns the new snapshot (nothing stored on failure)."""
    meta = meta or SnapshotMeta()
    stage = store.staging_dir("ckpt")
    try:
        cp = await checkpoint(sandbox, stage / "c", leave_running=leave_running)
        image_layers: list[str] = []
        parent: str | None = None
        for low in cp.lowers:
            sid = store.snapshot_of_lower(low)
            if sid is None:
                if parent is not None:
                    raise InvalidInputError(
                        f"sandbox {cp.sandbox_id} has image layer {low} above snapshot "
                        f"{parent}; cannot describe it as a snapshot chain"
                    )
                image_layers.append(str(low))
            else:
                parent = sid
        if not meta.layers:
            meta.layers = image_layers
        if meta.parent is None:
            meta.parent = parent
        meta.source_sandbox = meta.source_sandbox or cp.sandbox_id
        spec = getattr(sandbox, "spec", None)
        limits = getattr(spec, "limits", None)
        if not meta.limits and is_dataclass(limits) and not isinstance(limits, type):
            meta.limits = asdict(limits)
        if not meta.limits:
            # a restored sandbox: keep the limits of the snapshot it came from
            parent_limits = store.get(parent).meta.limits if parent else {}
            meta.limits = dict(parent_limits)
        if meta.function is None and spec is not None:
            meta.function = dict(getattr(spec, "annotations", {}) or {}).get("faasd.function")
        meta.extra = {**meta.extra, "checkpoint_ms": cp.timings_ms}
        return await asyncio.to_thread(
            store.create, {"criu": cp.criu, "upper": cp.upper, "bundle": cp.bundle}, meta
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def snapshot_lowers(store: SnapshotStore, snapshot_id: str) -> list[Path]:
    """Overlay lowers (lowest first) that reproduce a snapshot's filesystem: image layers, then the
    materialised uppers of its chain (root ancestor first)."""
    chain = store.chain(snapshot_id)
    lowers = [Path(p) for p in chain[0].meta.layers]
    for snap in chain:
        mat = store.materialized(snap.id)
        if mat.upper is not None:
            lowers.append(mat.upper)
    return lowers


def flatten_snapshot(
    store: SnapshotStore, snapshot_id: str, meta: SnapshotMeta | None = None, *, onto: str | None = None
) -> Snapshot:
    """A new snapshot with the filesystem of ``snapshot_id`` whose chain is at most two long.

    Its upper is the chain's uppers merged into one (:func:`flatten_uppers`: a path a later upper
    deleted stays deleted, a replaced (opaque) directory hides older content, hard links within the
    merged result are kept), so restoring it needs one lower instead of one per ancestor. Without
    ``onto`` the whole chain is merged onto the image layers and the result has no parent; with
    ``onto`` (an ancestor of ``snapshot_id``) only the links above it are merged and the result is a
    child of ``onto`` (it stays a common base, e.g. for merges of branches started from it).

    The process image (``criu`` + ``bundle``) of ``snapshot_id`` is carried over when it has one.
    ``meta`` defaults to a copy of the snapshot's own; ``parent`` and ``layers`` are set here and
    ``extra["flattened_from"]`` lists the snapshots merged. The old snapshots are left alone:
    deleting those nothing references any more is the caller's decision.
    """
    chain = store.chain(snapshot_id)
    ids = [s.id for s in chain]
    tip = chain[-1]
    if onto is None:
        links = chain
        base_layers = [Path(p) for p in chain[0].meta.layers]
    else:
        if onto not in ids[:-1]:
            raise InvalidInputError(
                f"snapshot {onto} is not a proper ancestor of {snapshot_id} (its chain is {ids})"
            )
        links = chain[ids.index(onto) + 1 :]
        base_layers = snapshot_lowers(store, onto)
    if meta is None:
        meta = SnapshotMeta(**{f.name: getattr(tip.meta, f.name) for f in fields(SnapshotMeta)})
        meta.labels, meta.extra, meta.limits = dict(meta.labels), dict(meta.extra), dict(meta.limits)
    meta.parent = onto
    meta.layers = list(chain[0].meta.layers) if onto is None else []
    meta.extra = {**meta.extra, "flattened_from": [s.id for s in links]}
    uppers: list[Path] = []
    for snap in links:
        upper = store.materialized(snap.id).upper
        if upper is not None:
            uppers.append(upper)
    stage = store.staging_dir("flatten")
    try:
        trees: dict[str, Path] = {"upper": stage / "upper"}
        if uppers:
            flatten_uppers(base_layers, uppers, trees["upper"])
        else:
            trees["upper"].mkdir()
        if "criu" in tip.trees and "bundle" in tip.trees:
            mat = store.materialized(tip.id)
            assert mat.criu is not None and mat.bundle is not None
            trees["criu"], trees["bundle"] = mat.criu, mat.bundle
        return store.create(trees, meta)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _limits(snap: Snapshot, overrides: Limits | None) -> Limits:
    if overrides is not None:
        return overrides
    known = {f.name for f in fields(Limits)}
    return Limits(**{k: v for k, v in snap.meta.limits.items() if k in known})


async def restore_snapshot(
    store: SnapshotStore,
    snapshot_id: str,
    new_id: str,
    *,
    manager: SandboxManager,
    limits: Limits | None = None,
    **kwargs: Any,
) -> Restored:
    """Start sandbox ``new_id`` from snapshot ``snapshot_id`` (limits: the snapshot's, unless given)."""
    snap = store.get(snapshot_id)
    if "criu" not in snap.trees or "bundle" not in snap.trees:
        raise InvalidInputError(
            f"snapshot {snapshot_id} has no process image (e.g. a merge result); "
            "start a new sandbox with snapshot_lowers() as its filesystem instead"
        )
    lowers = await asyncio.to_thread(snapshot_lowers, store, snapshot_id)
    mat = await asyncio.to_thread(store.materialized, snapshot_id)
    assert mat.criu is not None and mat.bundle is not None
    dirs = SnapshotDirs(criu=mat.criu, config_json=mat.bundle / "config.json", lowers=lowers)
    # keep the materialised uppers (our overlay lowers) through gc while the sandbox exists
    for link in store.chain(snapshot_id):
        store.lease(link.id, manager.sandboxes_dir / new_id)
    return await restore(manager, dirs, new_id, limits=_limits(snap, limits), **kwargs)


async def branch(
    store: SnapshotStore,
    snapshot_id: str,
    new_ids: Sequence[str],
    *,
    manager: SandboxManager,
    concurrency: int = 2,
    **kwargs: Any,
) -> list[Restored]:
    """Restore one snapshot into several new sandboxes. All or nothing: on a failure the copies
    already started are destroyed."""
    if len(set(new_ids)) != len(new_ids):
        raise InvalidInputError("branch ids must be unique")
    await asyncio.to_thread(store.materialized, snapshot_id)  # once, before the copies race for it
    sem = asyncio.Semaphore(max(1, concurrency))
    started: list[Restored] = []

    async def one(new_id: str) -> Restored:
        async with sem:
            r = await restore_snapshot(store, snapshot_id, new_id, manager=manager, **kwargs)
            started.append(r)
            return r

    results = await asyncio.gather(*(one(i) for i in new_ids), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for r in started:
            await r.sandbox.destroy()
        raise errors[0]
    return [r for r in results if isinstance(r, Restored)]


def merge_snapshots(
    store: SnapshotStore,
    base_id: str,
    branch_ids: Sequence[str],
    *,
    strategy: str = "fail",
    labels: Sequence[str] | None = None,
    meta: SnapshotMeta | None = None,
) -> tuple[Snapshot, MergeReport]:
    """Three-way merge of branch snapshots into a new child of ``base_id``.

    Every branch must descend from ``base_id`` (a child, or deeper: a branch of a branch, whose chain
    of uppers below the base is flattened into one change set first).
    """
    base = store.get(base_id)
    branches = [store.get(b) for b in branch_ids]
    chains: list[list[Snapshot]] = []
    for b in branches:
        ids = [s.id for s in store.chain(b.id)]
        if base_id not in ids or ids[-1] == base_id:
            raise InvalidInputError(
                f"snapshot {b.id} does not descend from {base_id} (its chain is {ids}); "
                "merge branches of one common base"
            )
        chains.append(store.chain(b.id)[ids.index(base_id) + 1 :])
    base_layers = snapshot_lowers(store, base_id)
    stage = store.staging_dir("merge")
    try:
        uppers: list[Path] = []
        for i, (b, chain) in enumerate(zip(branches, chains, strict=True)):
            maybe = [store.materialized(s.id).upper for s in chain]
            layers = [u for u in maybe if u is not None]
            if len(layers) != len(maybe):
                raise InvalidInputError(f"snapshot {b.id} has no filesystem (upper) to merge")
            if len(layers) == 1:
                uppers.append(layers[0])
            else:
                flat = stage / f"flat{i}"
                flatten_uppers(base_layers, layers, flat)
                uppers.append(flat)
        report = merge_uppers(
            base_layers,
            uppers,
            stage / "upper",
            strategy=strategy,
            labels=list(labels) if labels is not None else [b.id for b in branches],
        )
        meta = meta or SnapshotMeta()
        meta.parent = base_id
        meta.layers = meta.layers or list(base.meta.layers)
        meta.extra = {
            **meta.extra,
            "merge": {"branches": list(branch_ids), "strategy": strategy, "conflicts": len(report.conflicts)},
        }
        snap = store.create({"upper": stage / "upper"}, meta)
        report.result = snap.id
        return snap, report
    finally:
        shutil.rmtree(stage, ignore_errors=True)
