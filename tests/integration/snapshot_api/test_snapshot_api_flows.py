"""Snapshots through the real API: snapshot a worker, restore, branch, merge, checkpointed mode."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from snapshot_api_helpers import SnapEnv

from faasd.testing.leaks import memory_images

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def _deploy(env: SnapEnv, name: str, **kw: Any) -> dict[str, Any]:
    r = await env.client.post(
        "/api/v1/functions", json={"name": name, "image": env.image, "scale": {"min": 0, "max": 2}, **kw}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _invoke(env: SnapEnv, name: str, body: bytes = b"") -> tuple[dict[str, Any], str]:
    r = await env.client.post(f"/api/v1/functions/{name}/invoke", content=body)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["x-cold-start"]


async def _invoke_sb(env: SnapEnv, sandbox_id: str, body: bytes = b"") -> dict[str, Any]:
    r = await env.client.post(f"/api/v1/sandboxes/{sandbox_id}/invoke", content=body)
    assert r.status_code == 200, r.text
    env.sandbox_ids.add(sandbox_id)
    return json.loads(r.content)


async def test_snapshot_restore_counter_continues(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    await _deploy(env, unique_id)
    first, _ = await _invoke(env, unique_id)
    second, cold = await _invoke(env, unique_id)
    assert (first["n"], second["n"], cold) == (1, 2, "false")

    r = await env.client.post("/api/v1/snapshots", json={"function": unique_id, "labels": {"t": "1"}})
    assert r.status_code == 201, r.text
    snap = r.json()
    assert snap["function"] == unique_id and snap["restorable"] and snap["labels"] == {"t": "1"}
    env.sandbox_ids.add(snap["source_sandbox"])

    listed = (await env.client.get("/api/v1/snapshots", params={"function": unique_id})).json()
    assert [s["id"] for s in listed["snapshots"]] == [snap["id"]]

    r = await env.client.post(f"/api/v1/snapshots/{snap['id']}/restore")
    assert r.status_code == 201, r.text
    sb = r.json()
    assert sb["snapshot_id"] == snap["id"] and sb["id"] != snap["source_sandbox"]
    restored = await _invoke_sb(env, sb["id"])
    assert restored["n"] == 3 and restored["init"] == first["init"]  # memory carried over, no re-init
    # the source worker is unaffected and kept running
    source, cold = await _invoke(env, unique_id)
    assert source["n"] == 3 and cold == "false"

    # the snapshot is in use: refuse delete without force
    r = await env.client.delete(f"/api/v1/snapshots/{snap['id']}")
    assert r.status_code == 409 and sb["id"] in r.json()["details"]["users"]
    assert (await env.client.delete(f"/api/v1/sandboxes/{sb['id']}")).status_code == 204
    assert (await env.client.get(f"/api/v1/sandboxes/{sb['id']}")).status_code == 404
    assert (await env.client.delete(f"/api/v1/snapshots/{snap['id']}")).status_code == 204
    assert (await env.client.get(f"/api/v1/snapshots/{snap['id']}")).status_code == 404
    gc = (await env.client.post("/api/v1/snapshots/gc")).json()
    assert gc["removed_blobs"] > 0
    metrics = (await env.client.get("/metrics")).text
    assert 'faasd_snapshot_operations_total{op="restore",result="ok"} 1.0' in metrics


async def test_a_restore_from_the_store_unpacks_the_process_image_into_memory(
    snap_env: SnapEnv, unique_id: str
) -> None:
    env = snap_env
    await _deploy(env, unique_id)
    first, _ = await _invoke(env, unique_id)
    r = await env.client.post("/api/v1/snapshots", json={"function": unique_id})
    assert r.status_code == 201, r.text
    snap = r.json()
    env.sandbox_ids.add(snap["source_sandbox"])
    assert env.platform.snapshots is not None
    store = env.platform.snapshots.store
    assert store.evict(snap["id"]) is True  # only the blobs are left: the next restore unpacks
    r = await env.client.post(f"/api/v1/snapshots/{snap['id']}/restore")
    assert r.status_code == 201, r.text
    restored = await _invoke_sb(env, r.json()["id"])
    assert restored["n"] == first["n"] + 1 and restored["init"] == first["init"]
    assert memory_images(env.settings) == [snap["id"]]
    assert not (store.mnt_dir / snap["id"] / "criu").exists()
    metrics = (await env.client.get("/metrics")).text
    held = next(ln for ln in metrics.splitlines() if ln.startswith("faasd_snapshot_image_cache_bytes "))
    assert float(held.split()[1]) == store.image_cache.used_bytes() > 1_000_000
    # closing the platform gives that memory back: leak_checked_platform checks it after the test


async def test_branch_copies_are_independent(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id)
    snap = (await env.client.post("/api/v1/snapshots", json={"function": unique_id})).json()
    r = await env.client.post(f"/api/v1/snapshots/{snap['id']}/branch", json={"count": 3})
    assert r.status_code == 201, r.text
    ids = [s["id"] for s in r.json()["sandboxes"]]
    assert len(set(ids)) == 3
    first = [await _invoke_sb(env, i) for i in ids]
    assert [x["n"] for x in first] == [2, 2, 2]
    assert len({x["r"] for x in first}) == 3  # every copy reseeded its PRNG
    # state is per copy
    again = await _invoke_sb(env, ids[0])
    assert again["n"] == 3
    assert (await _invoke_sb(env, ids[1]))["n"] == 3
    assert (await _invoke_sb(env, ids[2]))["n"] == 3
    listed = (await env.client.get("/api/v1/sandboxes")).json()["sandboxes"]
    assert {s["id"] for s in listed} == set(ids)


async def test_merge_union_and_fail(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id, b"write:base.txt:base")
    base = (await env.client.post("/api/v1/snapshots", json={"function": unique_id})).json()
    ids = [
        s["id"]
        for s in (await env.client.post(f"/api/v1/snapshots/{base['id']}/branch", json={"count": 2})).json()[
            "sandboxes"
        ]
    ]
    await _invoke_sb(env, ids[0], b"write:a.txt:from-a")
    await _invoke_sb(env, ids[0], b"write:shared.txt:A")
    await _invoke_sb(env, ids[1], b"write:b.txt:from-b")
    await _invoke_sb(env, ids[1], b"write:shared.txt:B")
    snaps = []
    for sid in ids:
        r = await env.client.post("/api/v1/snapshots", json={"sandbox_id": sid})
        assert r.status_code == 201, r.text
        assert r.json()["parent"] == base["id"]
        snaps.append(r.json()["id"])

    r = await env.client.post("/api/v1/merges", json={"snapshot_ids": snaps, "strategy": "fail"})
    assert r.status_code == 409, r.text
    err = r.json()
    assert err["error"] == "conflict"
    conflicts = err["details"]["report"]["conflicts"]
    assert [c["path"] for c in conflicts] == ["var/tmp/shared.txt"]

    r = await env.client.post("/api/v1/merges", json={"snapshot_ids": snaps, "strategy": "union"})
    assert r.status_code == 200, r.text
    out = r.json()
    report, merged = out["report"], out["snapshot"]
    assert merged["parent"] == base["id"] and merged["kind"] == "filesystem"
    assert "var/tmp/a.txt" in report["taken"][snaps[0]] and "var/tmp/b.txt" in report["taken"][snaps[1]]
    assert [c["path"] for c in report["conflicts"]] == ["var/tmp/shared.txt"]
    # the merged tree really holds both branches' files
    assert env.platform.snapshots is not None
    mat = env.platform.snapshots.store.materialized(merged["id"])
    assert mat.upper is not None
    assert (mat.upper / "var/tmp/a.txt").read_text() == "from-a"
    assert (mat.upper / "var/tmp/b.txt").read_text() == "from-b"
    # a merge result has no process image
    assert (await env.client.post(f"/api/v1/snapshots/{merged['id']}/restore")).status_code == 400


async def test_checkpointed_mode_restores_cold_starts(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    fn = await _deploy(env, unique_id, mode="checkpointed")
    assert fn["mode"] == "checkpointed"
    first, cold = await _invoke(env, unique_id)
    assert cold == "true" and first["n"] == 1
    snaps = (await env.client.get("/api/v1/snapshots", params={"function": unique_id})).json()["snapshots"]
    assert len(snaps) == 1 and snaps[0]["labels"]["faasd.kind"] == "checkpoint"
    env.sandbox_ids.add(snaps[0]["source_sandbox"])

    # scale to zero: the next request is a cold start served by a restore of the checkpoint
    assert (
        await env.client.post(f"/api/v1/functions/{unique_id}/scale", json={"replicas": 0})
    ).status_code == 200
    second, cold = await _invoke(env, unique_id)
    assert cold == "true"
    assert second["init"] == first["init"]  # module-level init did not run again
    assert second["n"] == 1  # the checkpoint was taken before any request
    assert env.platform.snapshots is not None
    assert env.platform.snapshots.restore_count[unique_id] == 1

    # an update invalidates the checkpoint; the next cold start initialises (and checkpoints) afresh
    r = await env.client.put(
        f"/api/v1/functions/{unique_id}",
        json={"image": env.image, "mode": "checkpointed", "env": {"V": "2"}},
    )
    assert r.status_code == 200, r.text
    snaps2 = (await env.client.get("/api/v1/snapshots", params={"function": unique_id})).json()["snapshots"]
    assert snaps2 == []
    third, cold = await _invoke(env, unique_id)
    assert cold == "true" and third["init"] != first["init"]


async def test_branched_function(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    src = f"{unique_id}-src"
    await _deploy(env, src)
    await _invoke(env, src)
    await _invoke(env, src)
    snap = (await env.client.post("/api/v1/snapshots", json={"function": src})).json()
    r = await env.client.post(
        "/api/v1/functions", json={"name": unique_id, "image": env.image, "mode": "branched"}
    )
    assert r.status_code == 400  # branched needs branch_from
    await _deploy(env, unique_id, mode="branched", branch_from=snap["id"])
    out, cold = await _invoke(env, unique_id)
    assert cold == "true" and out["n"] == 3
    r = await env.client.delete(f"/api/v1/snapshots/{snap['id']}")
    assert r.status_code == 409 and f"function:{unique_id}" in r.json()["details"]["users"]


async def test_snapshot_waits_for_the_request_in_flight(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id)
    pool = env.platform.runner.pools[unique_id]
    [worker_id] = pool.worker_ids()
    env.sandbox_ids.add(worker_id)
    busy = asyncio.create_task(_invoke(env, unique_id, b"sleep:2"))
    while pool.stats().busy == 0:  # the request reached the worker
        await asyncio.sleep(0.01)
    r = await env.client.post("/api/v1/snapshots", json={"sandbox_id": worker_id})
    assert r.status_code == 201, r.text
    assert busy.done()  # the checkpoint waited until the worker was idle
    out, _ = busy.result()
    assert out["n"] == 2
    # the snapshot holds the state after that request; the source keeps serving
    sb = (await env.client.post(f"/api/v1/snapshots/{r.json()['id']}/restore")).json()
    assert (await _invoke_sb(env, sb["id"]))["n"] == 3
    assert (await _invoke(env, unique_id))[0]["n"] == 3


async def test_checkpointed_falls_back_when_restore_fails(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    await _deploy(env, unique_id, mode="checkpointed")
    first, _ = await _invoke(env, unique_id)
    assert env.platform.snapshots is not None
    snap = env.platform.snapshots.checkpoint_of(unique_id)
    assert snap is not None
    env.sandbox_ids.add(snap.meta.source_sandbox or "")
    # break the process image: CRIU cannot restore without its inventory
    mat = env.platform.snapshots.store.materialized(snap.id)
    assert mat.criu is not None
    (mat.criu / "inventory.img").unlink()
    await env.client.post(f"/api/v1/functions/{unique_id}/scale", json={"replicas": 0})
    second, cold = await _invoke(env, unique_id)
    assert cold == "true" and second["n"] == 1
    assert second["init"] != first["init"]  # a normal start: module init ran again
    assert env.platform.snapshots.restore_count.get(unique_id, 0) == 0
    metrics = (await env.client.get("/metrics")).text
    assert 'faasd_snapshot_operations_total{op="restore",result="error"} 1.0' in metrics
    # the broken checkpoint was replaced by one of the fresh worker: the next cold start restores it
    fresh = env.platform.snapshots.checkpoint_of(unique_id)
    assert fresh is not None and fresh.id != snap.id
    env.sandbox_ids.add(fresh.meta.source_sandbox or "")
    await env.client.post(f"/api/v1/functions/{unique_id}/scale", json={"replicas": 0})
    third, cold = await _invoke(env, unique_id)
    assert cold == "true" and third["init"] == second["init"] and third["n"] == 1
    assert env.platform.snapshots.restore_count[unique_id] == 1


async def test_async_sdk_snapshot_methods(snap_env: SnapEnv, unique_id: str) -> None:
    from faasd.sdk import AsyncClient
    from faasd.sdk.errors import NotFound

    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id)
    transport = env.client._transport  # the same ASGI app as the fixture's client
    async with AsyncClient("http://faasd.test", api_key="k", transport=transport) as sdk:
        snap = await sdk.snapshot(function=unique_id, labels={"via": "sdk"})
        assert snap.labels == {"via": "sdk"} and snap.restorable
        assert [s.id for s in await sdk.list_snapshots(function=unique_id)] == [snap.id]
        sb = await sdk.restore(snap.id)
        env.sandbox_ids.add(sb.id)
        assert (await sdk.invoke_sandbox(sb.id, b"")).json()["n"] == 2
        copies = await sdk.branch(snap.id, 2)
        env.sandbox_ids |= {c.id for c in copies}
        assert (await sdk.get_sandbox(copies[0].id)).snapshot_id == snap.id
        assert {s.id for s in await sdk.list_sandboxes()} == {sb.id, *(c.id for c in copies)}
        for s in [sb, *copies]:
            await sdk.delete_sandbox(s.id)
        with pytest.raises(NotFound):
            await sdk.get_sandbox(sb.id)
        assert (await sdk.get_snapshot(snap.id)).in_use_by == []
        await sdk.delete_snapshot(snap.id)
        assert (await sdk.gc_snapshots()).removed_blobs > 0
