"""Git-like lineage with real instances: snapshot A -> branch B from it -> both change files -> merge
A with B (by instance ids, sandbox ids or snapshot ids; API and job 5), every strategy's result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from instances_env import InstanceEnv

from faasd.snapshots.merge import LayeredView
from faasd.snapshots.service import snapshot_lowers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def _job(ie: InstanceEnv, type_: int, args: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = await ie.client.post("/api/v1/jobs", json={"type": type_, "args": args})
    assert r.status_code == status, r.text
    return r.json()


async def _exec(ie: InstanceEnv, iid: str, command: str) -> str:
    r = await ie.client.post(f"/api/v1/instances/{iid}/exec", json={"command": command})
    assert r.status_code == 200, r.text
    assert r.json()["exit_code"] == 0, r.json()
    return str(r.json()["stdout"])


def _files(ie: InstanceEnv, snapshot_id: str) -> dict[str, str]:
    """The files under /data in a snapshot's whole filesystem (its chain over the image)."""
    assert ie.platform.snapshots is not None
    view = LayeredView(snapshot_lowers(ie.platform.snapshots.store, snapshot_id))
    out: dict[str, str] = {}
    for rel in view.walk("data"):
        found = view.stat(rel)
        assert found is not None
        if found[0].is_file():
            out[rel.removeprefix("data/")] = Path(found[0]).read_text().strip()
    return out


async def test_snapshot_branch_change_merge_by_instances(inst_env: InstanceEnv) -> None:
    ie = inst_env
    r = await ie.client.post("/api/v1/instances", json={"disk_gb": 0.25, "memory_mb": 256})
    assert r.status_code == 201, r.text
    a = r.json()["id"]
    await _exec(ie, a, "mkdir -p /data && echo base > /data/shared && echo base > /data/doomed")
    await _exec(ie, a, "echo k > /data/keep")

    # snapshot A: it becomes A's base; B starts from it
    r = await ie.client.post("/api/v1/snapshots", json={"instance_id": a})
    assert r.status_code == 201, r.text
    base = r.json()["id"]
    assert r.json()["source_sandbox"] == (await ie.client.get(f"/api/v1/instances/{a}")).json()["sandbox_id"]
    b = (await _job(ie, 4, {"parent_snapshot_id": base, "branch_name": "b"}))["result"]["instance_id"]

    # both change files (B last, so `latest` picks B where both touched a path)
    await _exec(ie, a, "echo from-a > /data/a.txt && echo A > /data/shared && echo A-edit > /data/doomed")
    await _exec(ie, b, "sleep 0.05; echo from-b > /data/b.txt && echo B > /data/shared && rm /data/doomed")

    # merge A with B by instance ids through the API: conflicts are reported per path
    r = await ie.client.post("/api/v1/merges", json={"instance_ids": [a, b], "strategy": "fail"})
    assert r.status_code == 409, r.text
    conflicts = {c["path"]: c for c in r.json()["details"]["report"]["conflicts"]}
    assert set(conflicts) == {"data/shared", "data/doomed"}
    assert conflicts["data/shared"]["kind"] == "both-modified"
    assert conflicts["data/doomed"]["kind"] == "modify/delete"
    assert sorted(conflicts["data/doomed"]["sides"].values())[0] == "deleted"

    # job 5 by instance ids, with a strategy: base is A's snapshot, lineage made A's new snapshot a child
    job = (await _job(ie, 5, {"branch_ids": [a, b], "merge_strategy": "ours"}))["result"]
    assert job["base"] == base
    snap_a, snap_b = job["branches"]
    assert ie.platform.snapshots is not None
    store = ie.platform.snapshots.store
    # A's snapshots after `base` descend from it (the 409 merge above took the first of them) and hold
    # only the changes since; B was restored from `base`
    chain_a = [s.id for s in store.chain(snap_a)]
    assert chain_a[0] == base and len(chain_a) == 3, chain_a
    a_upper = {e.path for e in store.get(chain_a[1]).trees["upper"] if e.type != "dir"}
    assert a_upper == {"data/a.txt", "data/shared", "data/doomed"}, a_upper
    assert store.chain(snap_b)[0].id == base
    assert _files(ie, job["snapshot_id"]) == {
        "shared": "A", "doomed": "A-edit", "a.txt": "from-a", "b.txt": "from-b", "keep": "k"
    }

    # every strategy, by snapshot ids (no new snapshots), and once by the instances' sandbox ids
    expected = {
        "theirs": {"shared": "B", "a.txt": "from-a", "b.txt": "from-b", "keep": "k"},
        "latest": {"shared": "B", "a.txt": "from-a", "b.txt": "from-b", "keep": "k"},
        "intersection": {"shared": "base", "doomed": "base", "keep": "k"},
        "union": {
            "shared": "A", "doomed": "A-edit", "a.txt": "from-a", "b.txt": "from-b", "keep": "k",
            f"shared.conflict-{snap_b}": "B",
        },
    }
    for strategy, files in expected.items():
        r = await ie.client.post(
            "/api/v1/merges", json={"snapshot_ids": [snap_a, snap_b], "strategy": strategy}
        )
        assert r.status_code == 200, (strategy, r.text)
        out = r.json()
        assert out["base"] == base and out["snapshot"]["parent"] == base
        assert _files(ie, out["snapshot"]["id"]) == files, strategy
        if strategy == "union":
            shared = next(c for c in out["report"]["conflicts"] if c["path"] == "data/shared")
            assert shared["kept_copies"] == {snap_b: f"data/shared.conflict-{snap_b}"}

    sandboxes = [(await ie.client.get(f"/api/v1/instances/{x}")).json()["sandbox_id"] for x in (a, b)]
    r = await ie.client.post("/api/v1/merges", json={"sandbox_ids": sandboxes, "strategy": "theirs"})
    assert r.status_code == 200, r.text
    assert r.json()["base"] == base

    # A keeps its lineage through a stop: the stop snapshot descends from A's snapshots
    await _exec(ie, a, "echo after > /data/after.txt")
    stopped = (await ie.client.post(f"/api/v1/instances/{a}/stop")).json()
    chain = [s.id for s in store.chain(stopped["fs_snapshot"])]
    assert base in chain and snap_a in chain
    r = await ie.client.post(f"/api/v1/instances/{a}/start")
    assert r.status_code == 200, r.text
    assert await _exec(ie, a, "cat /data/shared /data/after.txt; ls /data") == (
        "A\nafter\na.txt\nafter.txt\ndoomed\nkeep\nshared\n"
    )
    # a stopped instance merges with its files as of the stop
    await ie.client.post(f"/api/v1/instances/{a}/stop")
    r = await ie.client.post("/api/v1/merges", json={"instance_ids": [a, b], "strategy": "ours"})
    assert r.status_code == 200, r.text
    assert _files(ie, r.json()["snapshot"]["id"])["after.txt"] == "after"

    # bad input: a clear 4xx
    r = await ie.client.post("/api/v1/merges", json={"instance_ids": [a], "strategy": "ours"})
    assert r.status_code == 400
    r = await ie.client.post("/api/v1/merges", json={"snapshot_ids": [base, snap_a], "strategy": "ours"})
    assert r.status_code == 400 and "is an ancestor" in r.json()["message"]
    r = await ie.client.post("/api/v1/merges", json={"sandbox_ids": ["fd-nope", b]})
    assert r.status_code == 404
    for x in (a, b):
        assert (await ie.client.delete(f"/api/v1/instances/{x}")).status_code == 204


async def test_seeded_instance_gets_its_copy_seed(inst_env: InstanceEnv) -> None:
    from faasd.snapshots.seeds import copy_seed

    ie = inst_env
    a = (await ie.client.post("/api/v1/instances", json={"disk_gb": 0.25, "memory_mb": 256})).json()["id"]
    snap = (await _job(ie, 2, {"container_id": a}))["result"]["snapshot_id"]
    seeded = (await _job(ie, 3, {"snapshot_id": snap, "seed": 5}))["result"]["instance_id"]
    plain = (await _job(ie, 4, {"parent_snapshot_id": snap, "branch_name": "p"}))["result"]["instance_id"]
    assert (await _exec(ie, seeded, "echo $FAASD_SEED")).strip() == copy_seed(5, 0)
    assert (await _exec(ie, plain, "echo ${FAASD_SEED:-none}")).strip() == "none"
    r = await ie.client.post("/api/v1/instances", json={"seed": 1})
    assert r.status_code == 422 and "needs 'snapshot_id'" in r.text  # a seed needs a snapshot
    for x in (a, seeded, plain):
        assert (await ie.client.delete(f"/api/v1/instances/{x}")).status_code == 204
