"""Reproducible branches (``seed``) and lineage merges of workers/restored sandboxes, through the API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from snapshot_api_helpers import SnapEnv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


async def _deploy(env: SnapEnv, name: str, **kw: Any) -> None:
    r = await env.client.post(
        "/api/v1/functions", json={"name": name, "image": env.image, "scale": {"min": 0, "max": 2}, **kw}
    )
    assert r.status_code == 201, r.text


async def _invoke(env: SnapEnv, name: str, body: bytes = b"") -> dict[str, Any]:
    r = await env.client.post(f"/api/v1/functions/{name}/invoke", content=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _invoke_sb(env: SnapEnv, sandbox_id: str, body: bytes = b"") -> dict[str, Any]:
    env.sandbox_ids.add(sandbox_id)
    r = await env.client.post(f"/api/v1/sandboxes/{sandbox_id}/invoke", content=body)
    assert r.status_code == 200, r.text
    return dict(json.loads(r.content))


async def _branch(env: SnapEnv, snap: str, count: int, seed: int | None) -> list[list[float]]:
    """Branch ``count`` copies, read three random numbers from each (in copy order), destroy them."""
    body: dict[str, Any] = {"count": count}
    if seed is not None:
        body["seed"] = seed
    r = await env.client.post(f"/api/v1/snapshots/{snap}/branch", json=body)
    assert r.status_code == 201, r.text
    copies = r.json()["sandboxes"]
    assert [c["copy_index"] for c in copies] == list(range(count)) and all(c["seed"] == seed for c in copies)
    out = [[(await _invoke_sb(env, c["id"]))["r"] for _ in range(3)] for c in copies]
    for c in copies:
        assert (await env.client.delete(f"/api/v1/sandboxes/{c['id']}")).status_code == 204
    return out


async def test_seeded_branches_repeat_exactly(snap_env: SnapEnv, unique_id: str) -> None:
    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id)
    r = await env.client.post("/api/v1/snapshots", json={"function": unique_id})
    assert r.status_code == 201, r.text
    snap = r.json()["id"]
    env.sandbox_ids.add(r.json()["source_sandbox"])

    first = await _branch(env, snap, 3, seed=42)
    again = await _branch(env, snap, 3, seed=42)
    assert first == again  # the same seed: every copy repeats its random sequence exactly
    assert len({tuple(x) for x in first}) == 3  # copy k differs from copy j
    other = await _branch(env, snap, 3, seed=43)
    assert all(o != f for o, f in zip(other, first, strict=True))
    unseeded = await _branch(env, snap, 3, seed=None)
    unseeded2 = await _branch(env, snap, 3, seed=None)
    assert len({tuple(x) for x in unseeded + unseeded2 + first}) == 9  # no seed: all distinct

    # a restore with a seed is copy 0 of a branch with that seed
    r = await env.client.post(f"/api/v1/snapshots/{snap}/restore", json={"seed": 42})
    assert r.status_code == 201, r.text
    sb = r.json()
    assert sb["seed"] == 42 and sb["copy_index"] == 0
    assert [(await _invoke_sb(env, sb["id"]))["r"] for _ in range(3)] == first[0]
    # and without a body, as before
    r = await env.client.post(f"/api/v1/snapshots/{snap}/restore")
    assert r.status_code == 201 and r.json()["seed"] is None
    env.sandbox_ids.add(r.json()["id"])

    r = await env.client.post(f"/api/v1/snapshots/{snap}/branch", json={"count": 2, "seed": -1})
    assert r.status_code == 422
    r = await env.client.post(f"/api/v1/snapshots/{snap}/restore", json={"seed": "x"})
    assert r.status_code == 422


async def test_sdk_and_cli_pass_the_seed(snap_env: SnapEnv, unique_id: str) -> None:
    from faasd.sdk import AsyncClient

    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id)
    transport = env.client._transport
    async with AsyncClient("http://faasd.test", api_key="k", transport=transport) as sdk:
        snap = await sdk.snapshot(function=unique_id)
        env.sandbox_ids.add(snap.source_sandbox or "")
        copies = await sdk.branch(snap.id, 2, seed=7)
        env.sandbox_ids |= {c.id for c in copies}
        assert [c.copy_index for c in copies] == [0, 1] and copies[0].seed == 7
        one = await sdk.restore(snap.id, seed=7)
        env.sandbox_ids.add(one.id)
        r0 = (await sdk.invoke_sandbox(copies[0].id, b"")).json()["r"]
        assert (await sdk.invoke_sandbox(one.id, b"")).json()["r"] == r0


async def test_merge_worker_with_its_restored_copy(snap_env: SnapEnv, unique_id: str) -> None:
    """Lineage for function workers: snapshot worker W -> restore R from it -> both write files ->
    merge W with R by sandbox ids (W's new snapshot is a child of the first one)."""
    env = snap_env
    await _deploy(env, unique_id)
    await _invoke(env, unique_id, b"write:base.txt:base")
    r = await env.client.post("/api/v1/snapshots", json={"function": unique_id})
    base = r.json()
    worker = base["source_sandbox"]
    env.sandbox_ids.add(worker)
    restored = (await env.client.post(f"/api/v1/snapshots/{base['id']}/restore")).json()["id"]
    await _invoke(env, unique_id, b"write:w.txt:from-worker")
    await _invoke_sb(env, restored, b"write:r.txt:from-restored")
    await _invoke(env, unique_id, b"write:both.txt:W")
    await _invoke_sb(env, restored, b"write:both.txt:R")

    body = {"sandbox_ids": [worker, restored], "strategy": "theirs"}
    r = await env.client.post("/api/v1/merges", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["base"] == base["id"] and out["snapshot"]["parent"] == base["id"]
    assert out["snapshot"]["function"] == unique_id
    assert [c["path"] for c in out["report"]["conflicts"]] == ["var/tmp/both.txt"]
    assert env.platform.snapshots is not None
    store = env.platform.snapshots.store
    w_snap = store.get(out["branches"][0])
    assert w_snap.meta.parent == base["id"]  # the worker's second snapshot: a child of its first
    w_files = {e.path for e in w_snap.trees["upper"] if e.type == "file"}
    assert {"var/tmp/w.txt", "var/tmp/both.txt"} <= w_files and "var/tmp/base.txt" not in w_files
    merged = store.materialized(out["snapshot"]["id"]).upper
    assert merged is not None
    assert (merged / "var/tmp/w.txt").read_text() == "from-worker"
    assert (merged / "var/tmp/r.txt").read_text() == "from-restored"
    assert (merged / "var/tmp/both.txt").read_text() == "R"
    assert not (merged / "var/tmp/base.txt").exists()  # unchanged since the base: not in the result's upper
