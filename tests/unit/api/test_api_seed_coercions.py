"""The seed's argument shapes: env pairs, runtime names, mode rules, job payloads; the result cache."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from faasd.api.routes_seed import ForkManyRequest, ForkRequest
from faasd.errors import InvalidInputError
from faasd.platform.env import env_pairs
from faasd.platform.exec_stats import ExecMetrics, ResultCache, cache_key_for, percentile
from faasd.platform.jobs import ExecuteFunctionArgs, UploadFilesArgs
from faasd.platform.seed_models import SeedExecuteRequest, sandbox_runtime

pytestmark = pytest.mark.unit


def test_env_pairs_shapes() -> None:
    assert env_pairs([["A", "1"], ("B", "2")]) == {"A": "1", "B": "2"}
    assert env_pairs(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert env_pairs({"A": "1"}) == {"A": "1"}
    for bad in (["A"], [["A"]], [["A", 1]], ["=x"], ["A=1", "A=2"]):
        with pytest.raises(ValueError):
            env_pairs(bad)


def test_runtime_names() -> None:
    assert sandbox_runtime(None) == sandbox_runtime("docker") == sandbox_runtime("auto") == "runc"
    assert sandbox_runtime("gvisor") == sandbox_runtime("runsc") == "runsc"
    with pytest.raises(InvalidInputError, match="firecracker"):
        sandbox_runtime("firecracker")


def test_seed_request_as_the_seed_sdk_sends_it() -> None:
    r = SeedExecuteRequest.model_validate(
        {
            "command": "echo hi",
            "image": "alpine:latest",
            "runtime": "auto",
            "timeout_ms": 30000,
            "env_vars": [["K", "v"]],
            "cache_key": "abc",
        }
    )
    r.check()
    assert (
        r.effective_mode == "cached" and r.env_vars == {"K": "v"} and r.args() == ["/bin/sh", "-c", "echo hi"]
    )


@pytest.mark.parametrize(
    "body, why",
    [
        ({"command": "x", "mode": "ephemeral", "cache_key": "k"}, "cache_key"),
        ({"command": "x", "snapshot_id": "snap-1"}, "snapshot_id"),
        ({"command": "x", "mode": "branched"}, "branch_from"),
        ({"command": "x", "branch_from": "rq_1"}, "branch_from"),
        ({"command": "x", "mode": "branched", "branch_from": "rq_1", "image": "i"}, "image"),
        ({"command": "x", "workspace": "rq_1"}, "workspace"),
        ({"command": "x", "mode": "checkpointed", "runtime": "gvisor"}, "runc"),
        ({"command": "x", "runtime": "firecracker"}, "firecracker"),
    ],
)
def test_fields_a_mode_does_not_use_are_refused(body: dict, why: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInputError, match=why):
        SeedExecuteRequest.model_validate(body).check()


def test_schema_errors() -> None:
    for bad in (
        {"command": "  "},
        {"command": []},
        {"command": "x", "bogus": 1},
        {"command": "x", "mode": "z"},
    ):
        with pytest.raises(ValidationError):
            SeedExecuteRequest.model_validate(bad)


def test_job_payload_and_files_shapes() -> None:
    assert (
        ExecuteFunctionArgs.model_validate({"command": "x", "payload": [0, 255]}).payload_bytes()
        == b"\x00\xff"
    )
    b64 = base64.b64encode(b"\x01").decode()
    a = ExecuteFunctionArgs.model_validate({"command": "x", "payload": b64, "payload_encoding": "base64"})
    assert a.payload_bytes() == b"\x01"
    assert ExecuteFunctionArgs.model_validate({"command": "x", "payload": "t"}).payload_bytes() == b"t"
    assert ExecuteFunctionArgs.model_validate({"command": "x", "env_vars": ["A=b"]}).env_vars == {"A": "b"}
    for bad in (
        {"payload": [256]},
        {"payload": [True]},
        {"payload": [1], "payload_encoding": "base64"},
        {"payload": "%%", "payload_encoding": "base64"},
        {"env_vars": ["1BAD=x"]},
    ):
        with pytest.raises(ValidationError):
            ExecuteFunctionArgs.model_validate({"command": "x", **bad})
    # every seed request model checks env names with the one validator (faasd.platform.env)
    with pytest.raises(ValidationError, match="1BAD"):
        SeedExecuteRequest.model_validate({"command": "x", "env_vars": [["1BAD", "x"]]})
    with pytest.raises(ValidationError, match="1BAD"):
        ForkRequest.model_validate({"command": "x", "env_vars": ["1BAD=x"]})
    with pytest.raises(ValidationError, match="1BAD"):
        ForkManyRequest.model_validate({"branch_from": "rq_1", "commands": ["x"], "env_vars": {"1BAD": "x"}})
    assert ForkRequest.model_validate({"command": "x", "env_vars": [["K", "v"]]}).env_vars == {"K": "v"}
    assert UploadFilesArgs.model_validate({"instance_id": "in-1", "files_data": "YQ=="}).tar_bytes() == b"a"
    for bad_files in ("", "!!", []):
        with pytest.raises(ValidationError):
            UploadFilesArgs.model_validate({"instance_id": "in-1", "files_data": bad_files})


def test_result_cache_bounds_and_expiry() -> None:
    now = [0.0]
    c = ResultCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    c.put("a", {"stdout": "1"})
    c.put("b", {"stdout": "2"})
    assert c.get("a") == {"stdout": "1"}  # a is now most recent
    c.put("c", {"stdout": "3"})
    assert c.get("b") is None and c.evictions == 1 and len(c) == 2
    now[0] = 11
    assert c.get("a") is None and c.expirations == 1
    assert not c.put("big", {"stdout": "x" * (2 * 1024 * 1024)})


def test_cache_key_and_metrics() -> None:
    k = cache_key_for("sha256:1", ["a"], {"X": "1", "Y": "2"}, None)
    assert k == cache_key_for("sha256:1", ["a"], {"Y": "2", "X": "1"}, None)
    assert k != cache_key_for("sha256:2", ["a"], {"X": "1", "Y": "2"}, None)
    assert k != cache_key_for("sha256:1", ["a"], {"X": "1", "Y": "2"}, "in")
    assert percentile([], 50) is None and percentile([3, 1, 2], 50) == 2 and percentile([1, 2, 3, 4], 99) == 4
    m = ExecMetrics()
    m.record(mode="cached", runtime="runc", latency_ms=5, cache_hit=False, start="cold", start_ms=5)
    m.record(mode="cached", runtime="runc", latency_ms=1, cache_hit=True)
    m.failed("ephemeral", "runsc", 2)
    s = m.summary()
    assert s["total_requests"] == 3 and s["cache_hit_rate"] == 0.5 and s["errors"] == 1
    assert s["gvisor_executions"] == 1 and m.performance()["cold_starts"] == 1


def test_inputs_are_strictly_typed(client) -> None:  # type: ignore[no-untyped-def]
    fn = {"name": "strict", "image": "faasd/python:latest", "scale": {"min": 0, "max": 2}}
    assert client.post("/api/v1/functions", json=fn).status_code == 201
    for body in ({"replicas": False}, {"replicas": "2"}, {"min": 1.5}):
        r = client.post("/api/v1/functions/strict/scale", json=body)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (body, r.text)
    assert client.post("/system/scale-function/strict", json={"replicas": True}).status_code == 422
    assert client.post("/api/v1/functions", json={**fn, "name": "s2", "concurrency": "3"}).status_code == 422
    assert client.post("/api/v1/jobs", json={"type": True, "args": {}}).status_code == 422
    assert client.post("/api/v1/functions/strict/scale", json={"replicas": 1}).status_code == 200
