"""The snapshot journey in a real browser: snapshot a function's worker, branch it from the graph (with
progress), change each copy differently through its invoke form, merge the copies from the graph with
the ``fail`` strategy (conflict report per path, nothing created), then with ``union``."""

from __future__ import annotations

import io
import json
import tarfile

import httpx
import pytest
from console_browser import HANDLER, Browser

from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def _invoke_copy(b: Browser, sandbox_id: str, body: str) -> None:
    b.click(f"g.chip[data-user='{sandbox_id}']")
    b.el("#sandbox-panel")
    b.fill("#invoke-body", body)
    b.click("#invoke-submit")
    b.text("[data-test=invoke-status]", "200", timeout=120)


def test_snapshot_branch_merge_from_the_graph(
    browser: Browser, faasd_server: FaasdServer, admin_api: httpx.Client, name: str, cleanup: list[str]
) -> None:
    # a Python function whose worker writes files: deployed from source through the API for speed
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("handler.py")
        info.size = len(HANDLER)
        tar.addfile(info, io.BytesIO(HANDLER.encode()))
    spec = {"name": name, "runtime": "python", "handler": "handler.handle", "scale": {"min": 0, "max": 1}}
    r = admin_api.post(
        "/api/v1/functions",
        files={"function": (None, json.dumps(spec), "application/json"), "source": ("s.tgz", buf.getvalue())},
    )
    assert r.status_code == 201, r.text
    cleanup.append(f"/api/v1/functions/{name}")
    assert admin_api.post(f"/api/v1/functions/{name}/invoke", content=b"warm").status_code == 200

    b = browser
    b.sign_in(faasd_server.api_key or "")
    b.accept_confirms()
    b.go("#/lineage")
    b.select("#snap-function", name)
    b.click("#snap-function-btn")

    def snapshot_of_function() -> str | None:
        snaps = admin_api.get("/api/v1/snapshots", params={"function": name}).json()["snapshots"]
        return snaps[0]["id"] if snaps else None

    snap_id = b.wait(snapshot_of_function, 180, "the function's snapshot")
    cleanup.append(f"/api/v1/snapshots/{snap_id}")
    b.el(f"g.node[data-snapshot='{snap_id}']")
    b.el("#snapshot-panel")
    b.fill("#branch-count", "2")
    b.click("#branch-btn")
    b.wait(
        lambda: b.el("[data-test=progress]").get_attribute("data-status") == "done", 300, "branch progress"
    )
    b.wait(lambda: len(b.all(f"g.node[data-snapshot='{snap_id}'] g.chip.sandbox")) == 2, 60, "two copies")
    copies = [
        c.get_attribute("data-user") for c in b.all(f"g.node[data-snapshot='{snap_id}'] g.chip.sandbox")
    ]
    for c in copies:
        cleanup.append(f"/api/v1/sandboxes/{c}")
    assert all(copies)
    b.screenshot("lineage-branched")

    # each copy writes its own content to the same file and a file of its own
    _invoke_copy(b, copies[0], "write:same.txt:from-a")
    _invoke_copy(b, copies[0], "write:only-a.txt:a")
    _invoke_copy(b, copies[1], "write:same.txt:from-b")

    # pick both copies for a merge from the graph
    for c in copies:
        b.click(f"g.chip[data-user='{c}']")
        b.click("#pick-sandbox")
    b.el("#merge-panel")
    b.select("#merge-strategy", "fail")
    b.click("#merge-submit")
    rep = b.text("#merge-report", "Merge refused", timeout=300)
    assert "var/tmp/same.txt" in rep.text and "add/add" in rep.text  # the conflict, per path
    b.screenshot("lineage-conflict", full=True)
    before = {s["id"] for s in admin_api.get("/api/v1/snapshots").json()["snapshots"]}
    assert not any(s for s in admin_api.get("/api/v1/snapshots").json()["snapshots"] if s["merge"])

    # the fail attempt snapshotted the copies; the graph now shows them: merge those two with union
    b.wait(lambda: len(b.all("g.node[data-snapshot]")) >= 3, 60, "the copies' snapshots")
    children = [s for s in admin_api.get("/api/v1/snapshots").json()["snapshots"] if s["parent"] == snap_id]
    assert len(children) == 2
    for s in children:
        cleanup.append(f"/api/v1/snapshots/{s['id']}")
    for c in copies:  # un-pick the sandboxes (they were removed from the pick list or are still there)
        if b.all(f"g.chip.picked[data-user='{c}']"):
            b.click(f"g.chip[data-user='{c}']")
            b.click("#pick-sandbox")
    for s in children:
        b.click(f"g.node[data-snapshot='{s['id']}'] rect.box")
        b.click("#pick-snapshot")
    b.select("#merge-strategy", "union")
    b.click("#merge-submit")
    rep = b.text("#merge-report", "Merged into", timeout=300)
    assert "var/tmp/same.txt" in rep.text and "conflict-" in rep.text  # kept copy of the losing side
    merged = [s for s in admin_api.get("/api/v1/snapshots").json()["snapshots"] if s["id"] not in before]
    merged = [s for s in merged if s["merge"]]
    assert len(merged) == 1 and merged[0]["kind"] == "filesystem"
    cleanup.append(f"/api/v1/snapshots/{merged[0]['id']}")
    # the merge node is drawn with merge edges from both branches
    b.el(f"g.node.merged[data-snapshot='{merged[0]['id']}']")
    assert len(b.all("path.edge.merge")) >= 1
    b.screenshot("lineage")
