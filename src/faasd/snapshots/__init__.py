"""Snapshots: content-addressed storage of CRIU images + overlay uppers, branching and merging.

``store`` (storage, pure fs), ``layers`` (layered views, flatten/rebase of uppers, pure fs), ``merge``
(three-way merge of uppers, pure fs), ``seeds`` (branch seeds) and ``service`` (lineage, checkpoint/
restore/branch/merge of sandboxes and snapshots through :mod:`faasd.runtime.checkpoint`).
"""

from faasd.snapshots.manifest import SnapshotHead, SnapshotInfo
from faasd.snapshots.merge import Conflict, MergeReport, merge_uppers
from faasd.snapshots.store import GcReport, MaterializedSnapshot, Snapshot, SnapshotMeta, SnapshotStore

__all__ = [
    "Conflict",
    "GcReport",
    "MaterializedSnapshot",
    "MergeReport",
    "Snapshot",
    "SnapshotHead",
    "SnapshotInfo",
    "SnapshotMeta",
    "SnapshotStore",
    "merge_uppers",
]
