"""The seed platform's gateway routes against a real daemon: health, execute in all five modes on real
sandboxes (warm pool, CRIU snapshots, instances), fork, prewarm, pools, metrics, the SSE log stream."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

IMAGE = "faasd/python:latest"
# processes named "sleep 1000" in the sandbox (no procps needed)
COUNT_SLEEPERS = (
    "n=0; for p in /proc/[0-9]*; do c=$(tr '\\000' ' ' < $p/cmdline 2>/dev/null); "
    'case "$c" in "sleep 1000 "*) n=$((n+1));; esac; done; echo sleepers=$n'
)
START_SLEEPER = "nohup sleep 1000 >/dev/null 2>&1 &"


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: FaasdServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as c:
        yield c


def run(http: httpx.Client, **body: object) -> dict:  # type: ignore[type-arg]
    r = http.post("/api/v1/execute", json=body)
    assert r.status_code == 200, r.text
    out: dict = r.json()  # type: ignore[type-arg]
    return out


def test_health(server: FaasdServer) -> None:
    r = httpx.get(server.url + "/health", timeout=30)  # public, like the seed's
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["status"] in ("healthy", "degraded") and isinstance(h["uptime_ms"], int)
    assert h["components"]["database"]["ok"] and h["components"]["runc"]["ok"] and h["runtime"] == "runc"
    assert h["firecracker"] is False


def test_seed_sdk_request_and_cached_mode(http: httpx.Client) -> None:
    # exactly what the seed SDK's execute() sends: shell string, env pairs, runtime, an md5 cache key
    command = "echo hello $FOO; echo oops >&2; date +%s%N"
    key = hashlib.md5(f"{command}:{IMAGE}:{time.time_ns()}".encode()).hexdigest()
    body = {
        "command": command,
        "image": IMAGE,
        "runtime": "auto",
        "timeout_ms": 30000,
        "env_vars": [["FOO", "bar"]],
        "cache_key": key,
    }
    first = run(http, **body)
    assert first["output"].startswith("hello bar\n") and first["stdout"] == first["output"]
    assert first["logs"] == "oops\n" and first["stderr"] == "oops\n"
    assert first["error"] is None and first["exit_code"] == 0 and first["request_id"].startswith("rq_")
    assert first["mode"] == "cached" and first["cache_hit"] is False
    second = run(http, **body)
    assert second["cache_hit"] is True and second["output"] == first["output"]  # same nanosecond stamp
    assert second["request_id"] != first["request_id"] and second["cached_request_id"] == first["request_id"]
    # without a cache key: keyed by image digest + command + env + stdin; other env = a miss
    third = run(http, command=command, mode="cached", env_vars={"FOO": "baz"})
    assert third["cache_hit"] is False and third["output"].startswith("hello baz\n")
    assert run(http, command=command, mode="cached", env_vars={"FOO": "baz"})["cache_hit"] is True


def test_execute_fields_are_honoured_or_refused(http: httpx.Client) -> None:
    r = run(
        http,
        command=["/bin/sh", "-c", "pwd; echo $A; cat; exit 3"],
        working_dir="/tmp",
        env_vars=["A=from-list"],
        stdin="in-put",
        mode="ephemeral",
        runtime="docker",
        memory_mb=128,
        cpu_cores=0.5,
    )
    assert r["stdout"] == "/tmp\nfrom-list\nin-put" and r["exit_code"] == 3
    assert r["error"] == "Process exited with code 3"
    r = run(http, command="sleep 5", timeout_ms=300)
    assert r["timed_out"] is True and "timed out" in r["error"]
    fc = http.post("/api/v1/execute", json={"command": "true", "runtime": "firecracker"})
    assert fc.status_code == 400 and "firecracker" in fc.json()["message"]
    missing = http.post("/api/v1/execute", json={"command": "true", "image": "alpine:latest"})
    assert missing.status_code == 404 and "alpine:latest" in missing.json()["message"]
    bad = http.post("/api/v1/execute", json={"command": "true", "mode": "ephemeral", "cache_key": "k"})
    assert bad.status_code == 400 and "cache_key" in bad.json()["message"]
    assert http.post("/api/v1/execute", json={"command": "true", "bogus": 1}).status_code == 422
    assert http.post("/api/v1/execute", json={"command": "true", "timeout_ms": False}).status_code == 422


def test_prewarm_gives_warm_starts(http: httpx.Client) -> None:
    r = http.post("/api/v1/prewarm", json={"image": IMAGE, "count": 1, "runtime": "auto"})
    assert r.status_code == 200, r.text
    assert r.json()["warm"] == 1 and len(r.json()["sandbox_ids"]) == 1
    warm_id = r.json()["sandbox_ids"][0]
    pools = http.get("/api/v1/pools").json()["execute"]
    assert any(warm_id in p["sandbox_ids"] for p in pools)
    out = run(http, command="echo warm; cat /etc/hostname >/dev/null")
    assert out["start"] == "warm" and out["stdout"] == "warm\n"
    pool = next(p for p in http.get("/api/v1/pools").json()["execute"] if p["image"] == IMAGE)
    assert pool["taken"] == 1 and warm_id not in pool["sandbox_ids"]
    # a cache miss also runs in a warm sandbox when one is pooled
    assert http.post("/api/v1/prewarm", json={"image": IMAGE, "count": 1}).json()["warm"] == 1
    miss = run(http, command=f"echo miss-{time.time_ns()}", mode="cached")
    assert miss["cache_hit"] is False and miss["start"] == "warm"
    assert http.post("/api/v1/prewarm", json={"image": IMAGE, "count": 0}).status_code == 200


def test_gvisor_runtime(http: httpx.Client) -> None:
    out = run(http, command="echo in-gvisor; uname -r", runtime="gvisor")
    assert out["runtime"] == "runsc" and out["stdout"].startswith("in-gvisor\n"), out
    # the sentry's own kernel, not the host's
    assert out["stdout"].split("\n")[1] != os.uname().release, out
    runc = run(http, command="uname -r", runtime="docker")
    assert runc["runtime"] == "runc" and runc["stdout"].strip() == os.uname().release


def test_checkpointed_branched_and_forks_keep_real_state(http: httpx.Client) -> None:
    ck = run(http, mode="checkpointed", command=f"echo one > /state; {START_SLEEPER} echo ok")
    assert ck["stdout"] == "ok\n" and ck["snapshot"]["id"].startswith("snap-")
    snap = ck["snapshot"]["id"]
    # branch by request id: the file and the background process are there; the branch changes them
    b1 = run(
        http,
        mode="branched",
        branch_from=ck["request_id"],
        command=f"cat /state; {COUNT_SLEEPERS}; echo two > /state",
    )
    assert b1["stdout"] == "one\nsleepers=1\n", b1
    # the source is untouched by the branch
    b2 = run(http, mode="branched", branch_from=snap, command="cat /state")
    assert b2["stdout"] == "one\n"
    # checkpointed with snapshot_id: restore, run, snapshot again
    ck2 = run(http, mode="checkpointed", snapshot_id=snap, command=f"echo more >> /state; {COUNT_SLEEPERS}")
    assert ck2["stdout"] == "sleepers=1\n" and ck2["snapshot"]["id"] != snap
    assert (
        run(http, mode="branched", branch_from=ck2["request_id"], command="cat /state")["stdout"]
        == "one\nmore\n"
    )
    # fork routes
    f = http.post(f"/api/v1/executions/{ck['request_id']}/fork", json={"command": "cat /state"})
    assert f.status_code == 200 and f.json()["stdout"] == "one\n" and f.json()["mode"] == "branched"
    many = http.post(
        "/api/v1/fork",
        json={"branch_from": snap, "commands": ["echo a >> /state; cat /state", ["cat", "/state"]]},
    )
    assert many.status_code == 200, many.text
    assert [x["stdout"] for x in many.json()] == ["one\na\n", "one\n"]
    missing = http.post(
        "/api/v1/execute", json={"mode": "branched", "branch_from": "rq_nope", "command": "true"}
    )
    assert missing.status_code == 404


def test_persistent_workspace(http: httpx.Client) -> None:
    first = run(
        http, mode="persistent", command=f"mkdir -p /work && echo 1 > /work/n; {START_SLEEPER} echo up"
    )
    ws = first["workspace"]["id"]
    assert ws == first["request_id"] and first["stdout"] == "up\n"
    again = run(
        http, mode="persistent", workspace=ws, command=f"cat /work/n; echo 2 >> /work/n; {COUNT_SLEEPERS}"
    )
    assert again["stdout"] == "1\nsleepers=1\n"
    # a branch of the workspace is a copy: its change does not reach the workspace
    br = run(http, mode="branched", branch_from=ws, command="cat /work/n; echo 3 >> /work/n")
    assert br["stdout"] == "1\n2\n"
    assert run(http, mode="persistent", workspace=ws, command="cat /work/n")["stdout"] == "1\n2\n"
    # TTL: an idle workspace goes away
    short = run(http, mode="persistent", command="true", ttl_s=1)
    deadline = time.monotonic() + 60
    while True:
        r = http.post(
            "/api/v1/execute",
            json={"mode": "persistent", "workspace": short["request_id"], "command": "true"},
        )
        if r.status_code == 404:
            break
        assert r.status_code == 200 and time.monotonic() < deadline, r.text
        time.sleep(2)  # a use resets the idle clock; wait longer than the TTL between tries


def test_metrics_and_log_stream(http: httpx.Client) -> None:
    out = run(http, command="echo line1; echo line2; echo err1 >&2")
    m = http.get("/api/v1/metrics").json()
    assert m["total_requests"] >= 1 and m["docker_executions"] >= 1 and m["vm_executions"] == 0
    d = http.get("/api/v1/metrics/detailed").json()
    assert d["performance"]["samples"] >= 1 and d["performance"]["latency_ms"]["p50"] is not None
    assert d["runtimes"]["firecracker"]["available"] is False
    with http.stream("GET", f"/api/v1/logs/{out['request_id']}/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [
        (b.split("\n")[0][7:], b.split("\n")[1][6:]) for b in text.replace("\r\n", "\n").strip().split("\n\n")
    ]
    assert events[:3] == [("stdout", "line1"), ("stdout", "line2"), ("stderr", "err1")], events
    assert events[-1][0] == "exit" and json.loads(events[-1][1])["exit_code"] == 0


def test_log_stream_of_a_running_function_execution(http: httpx.Client) -> None:
    name = "logs-" + hashlib.md5(str(time.time_ns()).encode()).hexdigest()[:8]
    fn = {
        "name": name,
        "image": IMAGE,
        "runtime": "exec",
        "command": ["/bin/sh", "-c", "echo first >&2; sleep 2; echo second >&2; cat"],
        "scale": {"min": 0, "max": 1},
    }
    assert http.post("/api/v1/functions", json=fn).status_code == 201
    try:
        r = http.post(f"/api/v1/functions/{name}/invoke-async", content=b"body")
        ex_id = r.json()["execution_id"]
        with http.stream("GET", f"/api/v1/logs/{ex_id}/stream") as s:  # opened while it is queued/running
            assert s.status_code == 200
            text = s.read().decode().replace("\r\n", "\n")
        blocks = [b.split("\n") for b in text.strip().split("\n\n")]
        events = [(b[0][len("event: ") :], b[1][len("data: ") :]) for b in blocks]
        assert ("stderr", "first") in events and ("stderr", "second") in events, events
        assert events[-1][0] == "exit" and json.loads(events[-1][1])["status"] == "succeeded"
        assert http.get("/api/v1/logs/ex_nope/stream").status_code == 404
    finally:
        http.delete(f"/api/v1/functions/{name}")
