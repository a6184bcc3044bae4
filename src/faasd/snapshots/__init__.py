"""Snapshots: content-addressed storage of CRIU images + overlay uppers, branching and merging.

``store`` (storage, pure fs), ``merge`` (three-way merge of uppers, pure fs) and ``service``
(checkpoint/restore of sandboxes through :mod:`faasd.runtime.checkpoint`).
"""

from faasd.snapshots.merge import Conflict, MergeReport, merge_uppers
from faasd.snapshots.store import GcReport, MaterializedSnapshot, Snapshot, SnapshotMeta, SnapshotStore

__all__ = [
    "Conflict",
    "GcReport",
    "MaterializedSnapshot",
    "MergeReport",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotStore",
    "merge_uppers",
]
