"""Snapshot, restore, branch and merge sandboxes: the runtime's checkpoint/restore plus the store.

This module is the one home of snapshot *lineage* (which snapshot a new one is a child of) and of the
merge of branches; the platform, the API, the jobs and the CLI all go through it.

* :func:`snapshot_sandbox` -- checkpoint a running sandbox (it keeps running) into the store. The new
  snapshot becomes the sandbox's *head*, its new base (git-like): the next snapshot of the same
  sandbox is a child of it, holding only the changes since (:func:`head_of`, :func:`rebase_upper`).
  A sandbox restored from a snapshot starts with that snapshot as its base (nested branches = a
  chain of uppers).
* :func:`snapshot_upper` -- the same for the filesystem alone (an instance's stop).
* :func:`restore_snapshot` / :func:`branch` -- start one / several new sandboxes from a snapshot; each
  gets its own empty upper over the shared, read-only materialised snapshot uppers (copy-on-write).
  ``seed``: copy ``k`` gets PRNG seed :func:`~faasd.snapshots.seeds.copy_seed` ``(seed, k)``.
* :func:`flatten_snapshot` -- the same filesystem (and process image) as a snapshot, with the
  links of its chain (above an ancestor, or all of them) merged into one upper: bounds the overlay
  lowers of long chains (persistent instances stopped and started many times; :data:`MAX_CHAIN_LENGTH`).
* :func:`common_base` / :func:`merge_branches` / :func:`merge_snapshots` -- three-way merge of the
  uppers of snapshots that share a base (their nearest common ancestor); the result is a
  filesystem-only snapshot (no CRIU image) whose parent is the base.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

from faasd.errors import InvalidInputError, NotFoundError
from faasd.runtime import Limits, SandboxManager
from faasd.runtime.checkpoint import checkpoint
from faasd.runtime.checkpointable import Checkpointable, checkpoint_source
from faasd.runtime.restore import Restored, SnapshotDirs, restore
from faasd.snapshots.layers import flatten_uppers, rebase_upper
from faasd.snapshots.merge import STRATEGIES, MergeReport, merge_uppers
from faasd.snapshots.seeds import check_seed, copy_seeds
from faasd.snapshots.store import MaterializedSnapshot, Snapshot, SnapshotMeta, SnapshotStore

MAX_CHAIN_LENGTH = 8
"""Longest snapshot chain (snapshots, each adding one overlay lower) a persistent instance keeps; a
longer one is flattened into a single snapshot (:func:`flatten_snapshot`)."""


# ------------------------------------------------------------------------------------- lineage
_HEADS: dict[tuple[str, str], list[str]] = {}
"""(store root, sandbox id) -> snapshots taken of that running sandbox, oldest first. In memory, and
written to ``<bundle>/faasd-heads.json`` (:data:`HEADS_FILE`) so that a daemon that re-adopts the sandbox
after a restart gets its lineage back (:func:`adopt_lineage`)."""

HEADS_FILE = "faasd-heads.json"


def head_of(store: SnapshotStore, sandbox_id: str) -> Snapshot | None:
    """The newest (still existing) snapshot taken of the running sandbox ``sandbox_id``: its current
    base, the parent of its next snapshot. None if it was never snapshotted."""
    for sid in reversed(_HEADS.get((str(store.root), sandbox_id), [])):
        if _exists(store, sid):
            return store.get(sid)
    return None


def _exists(store: SnapshotStore, snapshot_id: str) -> bool:
    try:
        store.get(snapshot_id)
    except NotFoundError:
        return False
    return True


def _set_head(store: SnapshotStore, sandbox_id: str, snapshot_id: str, bundle: Path | None = None) -> None:
    heads = _HEADS.setdefault((str(store.root), sandbox_id), [])
    heads.append(snapshot_id)
    if bundle is not None and bundle.is_dir():
        tmp = bundle / f".{HEADS_FILE}.tmp"
        try:
            tmp.write_text(json.dumps({"store": str(store.root), "heads": heads}))
            tmp.replace(bundle / HEADS_FILE)
        except OSError:  # lineage is best effort: without it the next snapshot is a child of the base
            tmp.unlink(missing_ok=True)


def adopt_lineage(store: SnapshotStore, sandbox_id: str, bundle: Path) -> list[str]:
    """After a daemon restart: restore the lineage of the running sandbox ``sandbox_id`` (re-adopted from
    ``bundle``) from what :func:`snapshot_sandbox` wrote there. Returns its heads, oldest first."""
    try:
        data = json.loads((bundle / HEADS_FILE).read_text())
    except (OSError, ValueError):
        return []
    if data.get("store") != str(store.root):
        return []
    heads = [str(h) for h in data.get("heads") or []]
    if heads:
        _HEADS[(str(store.root), sandbox_id)] = heads
    return heads


def snapshot_isolation(snap: Snapshot) -> Literal["runc", "gvisor"]:
    """``gvisor`` for a snapshot captured by gVisor's checkpoint, else ``runc`` (CRIU, or no process
    image; snapshots from before the field existed are CRIU's)."""
    return "gvisor" if snap.meta.extra.get("isolation") == "gvisor" else "runc"


def continue_from(store: SnapshotStore, sandbox_id: str, snapshot_id: str) -> None:
    """Make ``snapshot_id`` the head of ``sandbox_id``: a sandbox restored from it that takes the place
    of the captured one (a gVisor snapshot stops its source, which is then restored right away), so
    that its next snapshot or stop is a child of ``snapshot_id``."""
    _set_head(store, sandbox_id, snapshot_id)


def forget_sandbox(store: SnapshotStore, sandbox_id: str) -> None:
    """Drop the lineage of a sandbox that is gone (its snapshots stay)."""
    _HEADS.pop((str(store.root), sandbox_id), None)


def _mounted_base(
    store: SnapshotStore, sandbox_id: str, lowers: Sequence[Path]
) -> tuple[str | None, list[str]]:
    """The snapshot a sandbox's overlay lowers end with (None: image layers only) and its image layers."""
    image_layers: list[str] = []
    parent: str | None = None
    for low in lowers:
        sid = store.snapshot_of_lower(low)
        if sid is None:
            if parent is not None:
                raise InvalidInputError(
                    f"sandbox {sandbox_id} has image layer {low} above snapshot "
                    f"{parent}; cannot describe it as a snapshot chain"
                )
            image_layers.append(str(low))
        else:
            parent = sid
    return parent, image_layers


def _place_upper(
    store: SnapshotStore,
    sandbox_id: str,
    lowers: Sequence[Path],
    upper: Path,
    mounted: str | None,
    stage: Path,
) -> tuple[str | None, Path]:
    """Parent and upper for a new snapshot of ``sandbox_id`` whose overlay is ``lowers`` + ``upper``.

    Without an earlier snapshot of this sandbox: ``mounted`` and ``upper`` as they are. Otherwise the
    newest one (its head) is the parent and ``upper`` is rebased onto it (only the changes since)."""
    head = head_of(store, sandbox_id)
    if head is None or head.id == mounted:
        return mounted, upper
    chain = [s.id for s in store.chain(head.id)]
    if mounted is not None and mounted not in chain:
        return mounted, upper  # not a descendant of what the sandbox runs on (should not happen)
    rebased = stage / "rebased"
    rebase_upper(lowers, upper, snapshot_lowers(store, head.id), rebased)
    return head.id, rebased


async def snapshot_sandbox(
    store: SnapshotStore,
    sandbox: Checkpointable,
    meta: SnapshotMeta | None = None,
    *,
    leave_running: bool = True,
    lineage: bool = True,
) -> Snapshot:
    """Checkpoint ``sandbox`` and store it; returns the new snapshot (nothing stored on failure).

    The snapshot's parent is the sandbox's previous snapshot if it has one (lineage: its upper then
    holds only the changes since, ``extra["rebase_ms"]`` the time that took), else the snapshot it was
    restored from (or none: image layers). ``lineage=False``: neither look for nor become the
    sandbox's head (a side capture, e.g. a benchmark's)."""
    meta = meta or SnapshotMeta()
    stage = store.staging_dir("ckpt")
    try:
        cp = await checkpoint(checkpoint_source(sandbox), stage / "c", leave_running=leave_running)
        mounted, image_layers = _mounted_base(store, cp.sandbox_id, cp.lowers)
        t0 = time.perf_counter()
        parent, upper = mounted, cp.upper
        if lineage:
            parent, upper = await asyncio.to_thread(
                _place_upper, store, cp.sandbox_id, cp.lowers, cp.upper, mounted, stage
            )
        if not meta.layers:
            meta.layers = image_layers
        if meta.parent is None:
            meta.parent = parent
        meta.source_sandbox = meta.source_sandbox or cp.sandbox_id
        if not meta.limits:
            meta.limits = asdict(sandbox.spec.limits)
        if meta.function is None:
            meta.function = dict(sandbox.spec.annotations or {}).get("faasd.function")
        meta.extra = {
            **meta.extra, "checkpoint_ms": cp.timings_ms, "isolation": cp.isolation,
            "dumped_by": cp.dumped_by,
        }
        if upper != cp.upper:
            meta.extra["rebase_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        snap = await asyncio.to_thread(
            store.create, {"criu": cp.criu, "upper": upper, "bundle": cp.bundle}, meta
        )
        if lineage:
            _set_head(store, cp.sandbox_id, snap.id, Path(sandbox.bundle))
        return snap
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def snapshot_upper(
    store: SnapshotStore, sandbox_id: str, lowers: Sequence[Path], upper: Path, meta: SnapshotMeta
) -> Snapshot:
    """Store the filesystem changes of sandbox ``sandbox_id`` (``upper`` over ``lowers``) as a
    filesystem-only snapshot, e.g. when an instance stops. ``meta.parent`` is the snapshot its lowers
    reproduce; when the sandbox was snapshotted while it ran, the newest of those snapshots is the
    parent instead (and the upper is rebased onto it). Blocking."""
    stage = store.staging_dir("upper")
    try:
        parent, placed = _place_upper(store, sandbox_id, lowers, upper, meta.parent, stage)
        if parent != meta.parent:
            meta.parent = parent
            meta.layers = []
        meta.source_sandbox = meta.source_sandbox or sandbox_id
        snap = store.create({"upper": placed}, meta)
        forget_sandbox(store, sandbox_id)
        return snap
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def snapshot_lowers(store: SnapshotStore, snapshot_id: str) -> list[Path]:
    """Overlay lowers (lowest first) that reproduce a snapshot's filesystem: image layers, then the
    materialised uppers of its chain (root ancestor first)."""
    return _chain_lowers(store, snapshot_id, None)[0]


def _chain_lowers(
    store: SnapshotStore, snapshot_id: str, holder: Path | None
) -> tuple[list[Path], MaterializedSnapshot]:
    """:func:`snapshot_lowers` of a snapshot and its own materialised trees, in one pass over its chain;
    with ``holder``, each link is leased to it (kept through gc while it exists). Blocking."""
    chain = store.chain(snapshot_id)
    lowers = [Path(p) for p in chain[0].meta.layers]
    for snap in chain:
        mat = store.materialized(snap.id) if holder is None else store.lease(snap.id, holder)
        if mat.upper is not None:
            lowers.append(mat.upper)
    return lowers, mat


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
            assert mat.bundle is not None
            with store.process_image(tip.id) as criu:
                return store.create({**trees, "criu": criu, "bundle": mat.bundle}, meta)
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
    seed: int | None = None,
    copy: int = 0,
    **kwargs: Any,
) -> Restored:
    """Start sandbox ``new_id`` from snapshot ``snapshot_id`` (limits: the snapshot's, unless given).

    ``seed``: the agent (if any, and unless ``notify_agent=False``) reseeds its PRNGs from
    ``copy_seed(seed, copy)`` instead of the kernel."""
    check_seed(seed)
    snap = store.get(snapshot_id)
    if "criu" not in snap.trees or "bundle" not in snap.trees:
        raise InvalidInputError(
            f"snapshot {snapshot_id} has no process image (e.g. a merge result); "
            "start a new sandbox with snapshot_lowers() as its filesystem instead"
        )
    # the materialised uppers (the overlay lowers) are kept through gc while the sandbox exists
    lowers, mat = await asyncio.to_thread(_chain_lowers, store, snapshot_id, manager.sandboxes_dir / new_id)
    assert mat.bundle is not None
    [copy_seed_] = copy_seeds(seed, 1, first=copy)
    with contextlib.ExitStack() as pins:  # the process image stays in memory until CRIU has read it
        criu = await asyncio.to_thread(pins.enter_context, store.process_image(snapshot_id))
        dirs = SnapshotDirs(criu=criu, config_json=mat.bundle / "config.json", lowers=lowers)
        return await restore(manager, dirs, new_id, limits=_limits(snap, limits), seed=copy_seed_, **kwargs)


async def branch(
    store: SnapshotStore,
    snapshot_id: str,
    new_ids: Sequence[str],
    *,
    manager: SandboxManager,
    concurrency: int = 2,
    seed: int | None = None,
    **kwargs: Any,
) -> list[Restored]:
    """Restore one snapshot into several new sandboxes (copy ``k`` is ``new_ids[k]``; with ``seed`` its
    PRNGs are seeded from ``copy_seed(seed, k)``). All or nothing: on a failure the copies already
    started are destroyed."""
    check_seed(seed)
    if len(set(new_ids)) != len(new_ids):
        raise InvalidInputError("branch ids must be unique")
    await asyncio.to_thread(store.materialized, snapshot_id)  # once, before the copies race for it
    sem = asyncio.Semaphore(max(1, concurrency))
    started: list[Restored] = []

    async def one(k: int, new_id: str) -> Restored:
        async with sem:
            r = await restore_snapshot(
                store, snapshot_id, new_id, manager=manager, seed=seed, copy=k, **kwargs
            )
            started.append(r)
            return r

    results = await asyncio.gather(*(one(k, i) for k, i in enumerate(new_ids)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for r in started:
            await r.sandbox.destroy()
        raise errors[0]
    return [r for r in results if isinstance(r, Restored)]


def common_base(store: SnapshotStore, snapshot_ids: Sequence[str]) -> str:
    """The nearest common ancestor of ``snapshot_ids`` (the base their changes are merged against).

    It must lie strictly below all of them: merging a snapshot with its own ancestor is refused."""
    ids = list(snapshot_ids)
    chains = [[s.id for s in store.chain(b)] for b in ids]
    base: str | None = None
    for links in zip(*chains, strict=False):
        if len(set(links)) != 1:
            break
        base = links[0]
    if base is None or base in ids:
        if base is not None:
            hint = f"{base} is an ancestor of the others; snapshot its source again and merge that"
        else:
            hint = (
                "they share no ancestor; merge snapshots of sandboxes or instances restored from "
                "one snapshot"
            )
        raise InvalidInputError(
            f"snapshots {ids} have no common base snapshot below all of them: {hint}",
            snapshot_ids=ids,
            chains={b: c for b, c in zip(ids, chains, strict=True)},
        )
    return base


def merge_branches(
    store: SnapshotStore,
    snapshot_ids: Sequence[str],
    *,
    strategy: str = "fail",
    labels: Sequence[str] | None = None,
    meta: SnapshotMeta | None = None,
) -> tuple[Snapshot, MergeReport]:
    """Merge snapshots against their :func:`common_base` (see :func:`merge_snapshots`). Blocking."""
    check_strategy(strategy)
    ids = list(snapshot_ids)
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise InvalidInputError("a merge needs at least two distinct snapshots (branches)")
    base = common_base(store, ids)
    return merge_snapshots(store, base, ids, strategy=strategy, labels=labels, meta=meta)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"unknown merge strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return strategy


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
