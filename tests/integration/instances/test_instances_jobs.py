"""The twelve jobs through POST /api/v1/jobs, for real (runc, CRIU, snapshot store)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
from instances_env import InstanceEnv


async def _job(ie: InstanceEnv, type_: int | str, args: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = await ie.client.post("/api/v1/jobs", json={"type": type_, "args": args})
    assert r.status_code == status, r.text
    return r.json()


async def _exec(ie: InstanceEnv, iid: str, command: str) -> dict[str, Any]:
    r = await ie.client.post(f"/api/v1/instances/{iid}/exec", json={"command": command})
    assert r.status_code == 200, r.text
    return r.json()


async def test_job_execute_function_payload_and_env(inst_env: InstanceEnv) -> None:
    job = await _job(
        inst_env,
        0,
        {
            "image": "faasd/python:latest",
            "command": ["python3", "-c", "import os,sys; print(sys.stdin.read().upper(), os.environ['K'])"],
            "env_vars": {"K": "v"},
            "payload": "hello",
        },
    )
    assert job["type"] == 0 and job["type_name"] == "execute_function" and job["status"] == "succeeded"
    assert job["result"]["exit_code"] == 0 and job["result"]["stdout"] == "HELLO v\n"
    got = (await inst_env.client.get(f"/api/v1/jobs/{job['job_id']}")).json()
    assert got["result"] == job["result"]
    adv = await _job(inst_env, "execute_advanced", {"command": "sleep 5", "timeout_secs": 0.5})
    assert adv["result"]["timed_out"] is True


async def test_job_argument_errors(inst_env: InstanceEnv) -> None:
    r = await inst_env.client.post("/api/v1/jobs", json={"type": 6, "args": {"cpu_cores": "lots"}})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    assert r.json()["details"]["errors"][0]["loc"] == ["args", "cpu_cores"]
    r = await inst_env.client.post("/api/v1/jobs", json={"type": 0, "args": {"bogus": 1, "command": "x"}})
    assert r.status_code == 422
    r = await inst_env.client.post("/api/v1/jobs", json={"type": 12, "args": {}})
    assert r.status_code == 400
    r = await inst_env.client.post("/api/v1/jobs", json={"type": 6, "args": {"enable_ssh": True}})
    assert r.status_code == 400 and "ssh is not supported; use exec" in r.json()["message"]
    r = await inst_env.client.post("/api/v1/jobs", json={"type": 7, "args": {"instance_id": "in-nope"}})
    assert r.status_code == 404
    assert (await inst_env.client.get("/api/v1/jobs/job_nope")).status_code == 404


async def test_jobs_instance_lifecycle(inst_env: InstanceEnv) -> None:
    started = await _job(
        inst_env, 6, {"image": "faasd/python:latest", "cpu_cores": 0.5, "memory_mb": 256, "disk_gb": 0.25}
    )
    inst = started["result"]
    iid = inst["id"]
    assert inst["status"] == "running" and inst["cpu_cores"] == 0.5
    up = await _job(
        inst_env,
        11,
        {
            "instance_id": iid,
            "target_path": "/app",
            "files_data": [{"path": "main.txt", "content": base64.b64encode(b"uploaded\n").decode()}],
        },
    )
    assert up["result"]["files"] == 1
    assert (await _exec(inst_env, iid, "cat /app/main.txt"))["stdout"] == "uploaded\n"
    await _exec(
        inst_env,
        iid,
        "cd /app && (python3 -m http.server 8100 --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &)",
    )
    exposed = (await _job(inst_env, 10, {"instance_id": iid, "internal_port": 8100, "protocol": "http"}))[
        "result"
    ]
    async with httpx.AsyncClient() as direct:
        text = None
        for _ in range(100):
            try:
                resp = await direct.get(exposed["url"] + "/main.txt")
                if resp.status_code == 200:
                    text = resp.text
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    assert text == "uploaded\n"
    assert (await _job(inst_env, "pause_instance", {"instance_id": iid}))["result"]["status"] == "paused"
    assert (await _job(inst_env, 9, {"instance_id": iid}))["result"]["status"] == "running"
    stopped = (await _job(inst_env, 7, {"instance_id": iid}))["result"]
    assert stopped["status"] == "stopped"
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/start")
    assert r.status_code == 200
    assert (await _exec(inst_env, iid, "cat /app/main.txt"))["stdout"] == "uploaded\n"
    assert (await inst_env.client.delete(f"/api/v1/instances/{iid}")).status_code == 204


async def test_jobs_snapshot_branch_merge(inst_env: InstanceEnv) -> None:
    inst = (await _job(inst_env, 6, {"disk_gb": 0.25, "memory_mb": 256}))["result"]
    iid = inst["id"]
    await _exec(inst_env, iid, "mkdir -p /proj && echo base > /proj/common && echo 1 > /proj/keep")
    snap = (await _job(inst_env, 2, {"container_id": iid, "name": "base", "description": "d"}))["result"]
    base_id = snap["snapshot_id"]
    assert base_id.startswith("snap-")

    restored = (await _job(inst_env, 3, {"snapshot_id": base_id}))["result"]
    rid = restored["instance_id"]
    assert (await _exec(inst_env, rid, "cat /proj/common"))["stdout"] == "base\n"

    b1 = (await _job(inst_env, 4, {"parent_snapshot_id": base_id, "branch_name": "left"}))["result"]
    b2 = (await _job(inst_env, 4, {"parent_snapshot_id": base_id, "branch_name": "right"}))["result"]
    await _exec(inst_env, b1["instance_id"], "echo left > /proj/left")
    await _exec(inst_env, b2["instance_id"], "echo right > /proj/right && rm /proj/keep")
    merged = (
        await _job(
            inst_env, 5, {"branch_ids": [b1["instance_id"], b2["instance_id"]], "merge_strategy": "fail"}
        )
    )["result"]
    assert merged["base"] == base_id and merged["report"]["conflicts"] == []

    # the merge result is a filesystem-only snapshot: an instance starts on it
    m = (
        await _job(
            inst_env,
            6,
            {"snapshot_id": merged["snapshot_id"], "image": "faasd/python:latest", "disk_gb": 0.25},
        )
    )["result"]
    out = await _exec(inst_env, m["id"], "cat /proj/common /proj/left /proj/right; ls /proj")
    assert out["stdout"] == "base\nleft\nright\ncommon\nleft\nright\n"

    adv = (
        await _job(
            inst_env, 1, {"command": "cat /proj/common; cat", "payload": "in", "checkpoint_id": base_id}
        )
    )["result"]
    assert adv["mode"] == "restore" and adv["stdout"] == "base\nin"

    ck = (await _job(inst_env, 1, {"mode": "checkpoint", "command": "echo after-run > /marker"}))["result"]
    assert ck["exit_code"] == 0 and ck["snapshot_id"].startswith("snap-")
    again = (await _job(inst_env, 3, {"snapshot_id": ck["snapshot_id"]}))["result"]
    assert (await _exec(inst_env, again["instance_id"], "cat /marker"))["stdout"] == "after-run\n"
    assert (await inst_env.client.delete(f"/api/v1/instances/{again['instance_id']}")).status_code == 204

    for i in (iid, rid, b1["instance_id"], b2["instance_id"], m["id"]):
        assert (await inst_env.client.delete(f"/api/v1/instances/{i}")).status_code == 204
