"""Listing snapshots, their views and who uses them (``SnapshotService.list``/``view``/``users``) read the
manifests' heads only: a store of snapshots with thousands of files each is listed without reading a single
file tree, and the views are those of the whole manifests.

Real snapshot store on a temporary directory; the service's other collaborators are stand-ins (no sandbox
is started: orchestration only)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_snapshots_heads import write

from faasd.config import Settings
from faasd.platform.metrics import Metrics
from faasd.platform.snapshots import SnapshotService
from faasd.snapshots.store import SnapshotStore

pytestmark = pytest.mark.unit


def _service(tmp_path: Path) -> SnapshotService:
    settings = Settings(data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    runner: Any = SimpleNamespace(starters={}, pools={})
    functions: Any = SimpleNamespace(list=lambda: [], snapshot_check=None)
    return SnapshotService(settings, SnapshotStore(settings), None, None, runner, functions, Metrics())  # type: ignore[arg-type]


def test_listing_views_and_users_read_no_file_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _service(tmp_path)
    store = svc.store
    root = write(store, 1, "2026-12-07T00:00:01Z", files=2000)
    child = write(store, 2, "2026-12-07T00:00:02Z", parent=root, files=2000)
    orphan = write(store, 3, "2026-12-07T00:00:03Z", parent="snap-00000000000000ff")  # its parent is gone
    whole = {sid: svc.view(store.get(sid)) for sid in (root, child, orphan)}  # before any sandbox
    svc.sandboxes["sb-child"] = SimpleNamespace(id="sb-child", snapshot_id=child)  # type: ignore[assignment]
    svc.sandboxes["sb-orphan"] = SimpleNamespace(id="sb-orphan", snapshot_id=orphan)  # type: ignore[assignment]
    svc.modes.restored_workers["w-root"] = root

    def no_trees(*_a: object) -> None:
        raise AssertionError("a whole manifest was read")

    monkeypatch.setattr(store, "get", no_trees)
    monkeypatch.setattr(store, "chain", no_trees)
    listed = svc.list()
    assert [s.id for s in listed] == [root, child, orphan]  # oldest first
    views = {s.id: svc.view(s) for s in listed}
    assert views[root]["in_use_by"] == ["sb-child", "w-root"]  # through its child, and directly
    assert views[child]["in_use_by"] == ["sb-child"] and views[child]["children"] == []
    assert views[orphan]["in_use_by"] == ["sb-orphan"]  # its own sandbox, though an ancestor is missing
    for sid in (root, child, orphan):
        assert {k: v for k, v in views[sid].items() if k != "in_use_by"} == {
            k: v for k, v in whole[sid].items() if k != "in_use_by"
        }
    assert views[root]["children"] == [child]
    assert store._heads.reads == 3  # each manifest's head read once, over every listing and view
