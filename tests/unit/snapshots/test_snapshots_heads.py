"""The heads of a store's manifests (:mod:`faasd.snapshots.heads`): each manifest is read once, whatever the
number of listings; new, deleted and rewritten manifests are seen; heads come oldest first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from faasd.snapshots.store import SnapshotStore

pytestmark = pytest.mark.unit


def write(store: SnapshotStore, n: int, created: str, parent: str | None = None, files: int = 3) -> str:
    sid = f"snap-{n:016x}"
    manifest = {
        "version": 1,
        "id": sid,
        "created": created,
        "meta": {"labels": {"n": str(n)}, "parent": parent},
        "sizes": {"files": files},
        "trees": {
            "upper": [
                {"path": f"f{j}", "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 1}
                for j in range(files)
            ]
        },
    }
    path = store.manifests_dir / f"{sid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)  # as the store writes them: a new file under the name
    return sid


def test_heads_are_read_once_and_follow_the_directory(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    b = write(store, 2, "2026-12-07T00:00:02Z")
    a = write(store, 1, "2026-12-07T00:00:01Z")
    assert [h.id for h in store.heads()] == [a, b]  # oldest first
    assert [h.meta.labels for h in store.heads()] == [{"n": "1"}, {"n": "2"}]
    assert store._heads.reads == 2  # listed twice, each manifest read once
    c = write(store, 3, "2026-12-07T00:00:03Z", parent=a)
    (store.manifests_dir / f"{b}.json").unlink()
    assert [h.id for h in store.heads()] == [a, c] and store._heads.reads == 3
    assert [h.id for h in store.children(a)] == [c]  # found by their heads
    assert store.children(a)[0].meta.parent == a
    write(store, 3, "2026-12-07T00:00:03Z", parent=None, files=1)  # rewritten (a new file): read again
    assert store.heads()[-1].meta.parent is None and store._heads.reads == 4
    assert store.children(a) == []


def test_one_head_by_id_is_read_once_and_knows_its_trees(tmp_path: Path) -> None:
    """``SnapshotStore.head``: one snapshot without its entries, read once while its file is the same, the
    names of its trees kept (a view tells a process snapshot by them); a deleted one is not found."""
    from faasd.errors import NotFoundError
    from faasd.platform.snapshot_meta import snapshot_dict

    store = SnapshotStore(tmp_path)
    a = write(store, 1, "2026-12-07T00:00:01Z", files=2000)
    head = store.head(a)
    assert head.tree_names == ("upper",) and head.meta.labels == {"n": "1"}
    assert store.head(a) is head and store._heads.reads == 1
    assert store.heads() == [head] and store._heads.reads == 1  # listing shares what was read
    full = store.get(a)
    assert full.tree_names == head.tree_names
    assert snapshot_dict(head) == snapshot_dict(full)  # a view from the head is the whole manifest's
    assert snapshot_dict(head)["kind"] == "filesystem" and not snapshot_dict(head)["restorable"]
    (store.manifests_dir / f"{a}.json").unlink()
    with pytest.raises(NotFoundError):
        store.head(a)
    with pytest.raises(NotFoundError):
        store.head("../etc/passwd")
