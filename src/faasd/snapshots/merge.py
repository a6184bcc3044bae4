"""Three-way merge of branch filesystems (overlay uppers) against their common base.

Every branch was restored from the same base snapshot, so each branch's overlay upper *is* its set
of changes relative to the base view (image layers + the base snapshot's upper chain):

* a regular file / symlink / device in the upper: the path was added or modified,
* a whiteout (char device 0/0): the path (and everything below it) was deleted,
* a directory with ``trusted.overlay.opaque=y`` (or ``user.overlay.opaque``): the directory was
  replaced -- every base entry below it that the upper does not have again was deleted,
* a plain directory: only a change if it is new or its mode/owner differ from the base.

:func:`merge_uppers` normalises each upper into a *delta* (path -> new state, topmost paths only),
then merges path by path:

* a path changed on one branch only: the change is taken;
* the same change on several branches: taken once (``identical``);
* different changes to the same path: a :class:`Conflict` of kind ``both-modified`` (existed in
  the base, changed differently), ``add/add`` (new on several branches with different content),
  ``modify/delete`` (deleted on one branch, changed on another -- also when one branch deleted a
  directory and another changed something inside it) or ``type-change`` (file vs directory vs
  symlink ...).

Strategies for conflicts (non-conflicting changes are taken by all strategies except ``intersection``):

* ``fail``: raise :class:`~faasd.errors.ConflictError` carrying the report if there is any conflict.
* ``ours``: the first branch (in the order given) that changed the path wins.
* ``theirs``: the last branch that changed the path wins.
* ``latest``: the side with the newest mtime wins (ties: the later branch).
* ``union``: like ``ours`` at the path, and every losing side's regular-file or symlink version is
  kept next to it as ``<path>.conflict-<label>`` so no data is lost (losing deletions and losing
  directory trees are dropped; the report lists them).
* ``intersection``: only changes made identically on *all* branches are taken; everything else
  (single-branch changes and conflicts) keeps the base version.

The result is a new upper directory (relative to the same base view) and a :class:`MergeReport`.
Layered views, path states and layer arithmetic (``flatten_uppers``: a branch of a branch as one upper
relative to an older base, so nested branches merge against a common ancestor; ``rebase_upper``) are
:mod:`faasd.snapshots.layers`. Pure filesystem code; no mounts needed.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from faasd.errors import ConflictError, InvalidInputError
from faasd.snapshots.fstree import apply_metadata, is_opaque, is_whiteout
from faasd.snapshots.layers import (
    DELETED,
    Change,
    LayeredView,
    State,
    ancestors,
    diff_layers,
    ensure_parents,
    flatten_uppers,
    rebase_upper,
    state_of,
)

__all__ = [  # the layer helpers are re-exported: they used to live here
    "STRATEGIES",
    "Change",
    "Conflict",
    "LayeredView",
    "MergeReport",
    "State",
    "diff_layers",
    "flatten_uppers",
    "merge_uppers",
    "rebase_upper",
    "state_of",
    "upper_delta",
]

Strategy = Literal["union", "intersection", "latest", "ours", "theirs", "fail"]
STRATEGIES: tuple[str, ...] = ("union", "intersection", "latest", "ours", "theirs", "fail")



@dataclass
class Conflict:
    path: str
    kind: str  # both-modified | modify/delete | add/add | type-change
    sides: dict[str, str]  # branch label -> description of its version
    resolution: str  # winning label, "base", or "fail"
    kept_copies: dict[str, str] = field(default_factory=dict)  # label -> path of the kept copy (union)


@dataclass
class MergeReport:
    strategy: str
    branches: list[str]
    taken: dict[str, list[str]]  # label -> paths whose change from that branch is in the result
    identical: list[str]  # paths changed identically on several branches (taken once)
    conflicts: list[Conflict]
    dropped: dict[str, list[str]]  # label -> changed paths not in the result
    result: str

    @property
    def has_conflicts(self) -> bool:
        return bool(self.conflicts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- deltas
def upper_delta(upper: Path, base: LayeredView) -> dict[str, Change]:
    """The changes an overlay upper makes on top of ``base`` (topmost paths only).

    Entries of a replaced directory (opaque, or a directory over a base non-directory) that the
    base has but the upper does not are reported as deletions, so the delta never needs opaque
    markers: the merge result is written with explicit whiteouts instead.
    """
    delta: dict[str, Change] = {}

    def visit(rel_dir: str, replaced: bool, dir_mtime: int) -> None:
        d = upper / rel_dir if rel_dir else upper
        present: set[str] = set()
        for name in sorted(os.listdir(d)):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            p = d / name
            st = p.lstat()
            if is_whiteout(st):
                if base.stat(rel) is not None:
                    delta[rel] = Change(DELETED, None, st.st_mtime_ns)
                continue
            present.add(name)
            new = state_of(p, st)
            old = base.state(rel)
            if new.kind == "dir":
                fresh = old is None or old.kind != "dir"
                if fresh or old != new:
                    delta[rel] = Change(new, p, st.st_mtime_ns)
                visit(rel, replaced or fresh or is_opaque(p), st.st_mtime_ns)
            elif old != new:
                delta[rel] = Change(new, p, st.st_mtime_ns)
        if replaced:
            for base_name in base.listdir(rel_dir):
                if base_name not in present:
                    rel = f"{rel_dir}/{base_name}" if rel_dir else base_name
                    delta.setdefault(rel, Change(DELETED, None, dir_mtime))

    visit("", is_opaque(upper), upper.lstat().st_mtime_ns)
    return delta


def _conflict_kind(base: State | None, states: list[State]) -> str:
    kinds = {s.kind for s in states}
    if "deleted" in kinds:
        return "modify/delete"
    if len(kinds) > 1:
        return "type-change"
    if base is None:
        return "add/add"
    return "both-modified"


# ---------------------------------------------------------------------------------------------- merge
def merge_uppers(
    base_layers: Sequence[Path],
    branches: Sequence[Path],
    dest: Path,
    *,
    strategy: str = "fail",
    labels: Sequence[str] | None = None,
) -> MergeReport:
    """Merge branch uppers (each relative to the view ``base_layers``, lowest first) into ``dest``.

    ``dest`` must not exist; it is created as an overlay upper holding the merged changes. On
    ``strategy="fail"`` with conflicts, :class:`ConflictError` is raised (``details["report"]``)
    and ``dest`` is not created.
    """
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"unknown merge strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if len(branches) < 2:
        raise InvalidInputError("a merge needs at least two branches")
    labels = list(labels) if labels is not None else [f"branch{i}" for i in range(len(branches))]
    if len(labels) != len(branches) or len(set(labels)) != len(labels):
        raise InvalidInputError("merge labels must be unique, one per branch")
    if dest.exists():
        raise InvalidInputError(f"merge destination {dest} already exists")
    base = LayeredView(base_layers)
    deltas = [upper_delta(Path(b), base) for b in branches]
    n = len(branches)

    # all changed paths, and for each path which branches have changes strictly below it
    all_paths = sorted(set().union(*deltas), key=lambda p: p.split("/"))
    below: dict[str, set[int]] = {}
    for i, delta in enumerate(deltas):
        for p in delta:
            for a in ancestors(p):
                below.setdefault(a, set()).add(i)

    chosen: dict[str, tuple[int, Change]] = {}  # path -> (branch index, change) written to the result
    copies: list[tuple[str, int, Change]] = []
    report = MergeReport(
        strategy=strategy,
        branches=labels,
        taken={lb: [] for lb in labels},
        identical=[],
        conflicts=[],
        dropped={lb: [] for lb in labels},
        result=str(dest),
    )
    closed: set[str] = set()  # result keeps no directory here: nothing below may be written

    for p in all_paths:
        touching = [i for i in range(n) if p in deltas[i]]
        if any(a in closed for a in ancestors(p)):
            for i in touching:
                report.dropped[labels[i]].append(p)
            continue
        states = {i: deltas[i][p].state for i in touching}
        # branches that leave p alone but change something inside it (p stays a directory for them)
        inside = sorted(i for i in below.get(p, set()) if i not in states)
        closes = any(s.kind != "dir" for s in states.values())
        if len(set(states.values())) <= 1 and not (closes and inside):
            i0 = touching[0]
            if strategy == "intersection" and len(touching) < n:
                for i in touching:
                    report.dropped[labels[i]].append(p)
                continue
            chosen[p] = (i0, deltas[i0][p])
            for i in touching:
                report.taken[labels[i]].append(p)
            if len(touching) > 1:
                report.identical.append(p)
            if states[i0].kind != "dir":
                closed.add(p)
            continue

        # ---- conflict: sides are the touching branches plus (if p is closed by someone) the
        # branches that changed things inside p
        sides: dict[int, State | None] = dict(states)
        if closes:
            sides.update({i: None for i in inside})
        participants = sorted(sides)
        side_states = [s if s is not None else State("dir") for s in sides.values()]
        kind = _conflict_kind(base.state(p), side_states)
        conflict = Conflict(
            path=p,
            kind=kind,
            resolution="",
            sides={
                labels[i]: (s.describe() if s is not None else "directory with changes inside")
                for i, s in sorted(sides.items())
            },
        )
        report.conflicts.append(conflict)
        if strategy == "fail":
            conflict.resolution = "fail"
            continue
        if strategy == "intersection":
            conflict.resolution = "base"
            for i in touching:
                report.dropped[labels[i]].append(p)
            closed.add(p)  # the base version of p and of everything below it stays
            continue
        if strategy in ("ours", "union"):
            winner = participants[0]
        elif strategy == "theirs":
            winner = participants[-1]
        else:  # latest

            def side_mtime(i: int, p: str = p) -> int:
                if p in deltas[i]:
                    return deltas[i][p].mtime_ns
                return max(c.mtime_ns for q, c in deltas[i].items() if q.startswith(p + "/"))

            winner = max(participants, key=lambda i: (side_mtime(i), i))
        conflict.resolution = labels[winner]
        if winner in states:
            chosen[p] = (winner, deltas[winner][p])
            report.taken[labels[winner]].append(p)
            if states[winner].kind != "dir":
                closed.add(p)
        for i in touching:
            if i == winner:
                continue
            report.dropped[labels[i]].append(p)
            ch = deltas[i][p]
            if strategy == "union" and ch.state.kind in ("file", "symlink"):
                copy_path = f"{p}.conflict-{labels[i]}"
                copies.append((copy_path, i, ch))
                conflict.kept_copies[labels[i]] = copy_path

    if strategy == "fail" and report.conflicts:
        raise ConflictError(
            f"merge of {len(branches)} branches has {len(report.conflicts)} conflict(s): "
            + ", ".join(f"{c.path} ({c.kind})" for c in report.conflicts[:10])
            + ("..." if len(report.conflicts) > 10 else "")
            + "; pick a strategy (ours, theirs, latest, union, intersection) or resolve them",
            report=report.to_dict(),
        )

    _write_result(dest, base, chosen, copies)
    return report


def _write_result(
    dest: Path,
    base: LayeredView,
    chosen: dict[str, tuple[int, Change]],
    copies: list[tuple[str, int, Change]],
) -> None:
    tmp = dest.with_name(dest.name + ".tmp-merge")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    root = base.stat("")
    if root is not None:
        st = root[1]
        apply_metadata(tmp, st.st_mode, st.st_uid, st.st_gid, {}, None, False)
    dir_meta: list[tuple[Path, Change]] = []
    items = sorted(chosen.items(), key=lambda kv: kv[0].split("/"))
    items_copies = [(p, (i, ch)) for p, i, ch in copies]
    for rel, (_i, ch) in items + items_copies:
        target = tmp / rel
        ensure_parents(tmp, rel, base, chosen)
        s = ch.state
        if s.kind == "deleted":
            os.mknod(target, stat.S_IFCHR | 0o000, 0)
            continue
        src = ch.source
        assert src is not None
        if s.kind == "dir":
            # never opaque: base children a replaced dir did not keep are explicit deletions
            if not target.exists():
                target.mkdir()
            dir_meta.append((target, ch))
            continue
        if target.exists() or target.is_symlink():
            # a union copy name colliding with a real entry: keep the real one
            continue
        if s.kind == "file":
            shutil.copyfile(src, target, follow_symlinks=False)
        elif s.kind == "symlink":
            os.symlink(os.readlink(src), target)
        else:
            st = src.lstat()
            os.mknod(target, st.st_mode, st.st_rdev)
        st = src.lstat()
        apply_metadata(
            target, st.st_mode, st.st_uid, st.st_gid, dict(s.xattrs), st.st_mtime_ns, s.kind == "symlink"
        )
    for target, ch in reversed(dir_meta):
        assert ch.source is not None
        st = ch.source.lstat()
        apply_metadata(target, st.st_mode, st.st_uid, st.st_gid, dict(ch.state.xattrs), st.st_mtime_ns, False)
    tmp.rename(dest)
