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
