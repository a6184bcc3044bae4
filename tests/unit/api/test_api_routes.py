"""HTTP API shapes: native routes, OpenFaaS routes, errors, auth scopes, rate limits, payload limit."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.unit

FN = {"name": "hello", "image": "faasd/python:latest", "scale": {"min": 0, "max": 2}}


def assert_error(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    return body


def test_healthz_and_info(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/api/v1/info").json()
    assert "python" in info["runtimes"] and info["auth"] is False


def test_function_crud(client: TestClient) -> None:
    r = client.post("/api/v1/functions", json=FN)
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "hello" and body["status"]["replicas"] == 0 and body["limits"]["memory_mb"] == 256
    assert_error(client.post("/api/v1/functions", json=FN), 409, "conflict")
    assert client.get("/api/v1/functions").json()["functions"][0]["name"] == "hello"
    r = client.put("/api/v1/functions/hello", json={**FN, "env": {"A": "b"}})
    assert r.status_code == 200 and r.json()["env"] == {"A": "b"}
    assert client.delete("/api/v1/functions/hello").status_code == 204
    assert_error(client.get("/api/v1/functions/hello"), 404, "not_found")
    assert_error(client.delete("/api/v1/functions/hello"), 404, "not_found")


def test_validation_errors_are_json(client: TestClient) -> None:
    body = assert_error(client.post("/api/v1/functions", json={"name": "x"}), 422, "validation_error")
    assert body["details"]["errors"][0]["loc"] == ["image"]
    assert_error(
        client.post("/api/v1/functions", json={**FN, "limits": {"memory_mb": 1}}), 422, "validation_error"
    )
    assert_error(client.post("/api/v1/functions", json={**FN, "name": "Bad!"}), 400, "invalid_input")
    assert_error(client.post("/api/v1/functions", json={**FN, "mode": "branched"}), 400, "invalid_input")
    assert_error(client.post("/api/v1/functions", content=b"{nope"), 400, "invalid_input")
    assert_error(client.post("/api/v1/functions/hello/scale", json={"min": "x"}), 422, "validation_error")
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_sync_invoke_and_execution(client: TestClient) -> None:
    client.post("/api/v1/functions", json=FN)
    r = client.post("/api/v1/functions/hello/invoke", content=b"hi")
    assert r.status_code == 200 and r.content == b"echo:hi"
    assert r.headers["x-cold-start"] == "true" and r.headers["content-type"].startswith("text/plain")
    ex_id = r.headers["x-execution-id"]
    ex = client.get(f"/api/v1/executions/{ex_id}").json()
    assert ex["status"] == "succeeded" and ex["result"] == "echo:hi" and ex["kind"] == "sync"
    logs = client.get(f"/api/v1/executions/{ex_id}/logs").json()
    assert logs["stdout"] == "line1\nline2\n"
    r2 = client.post("/api/v1/functions/hello/invoke", content=b"again")
    assert r2.headers["x-cold-start"] == "false"
    lines = client.get("/api/v1/functions/hello/logs", params={"tail": 2}).json()["lines"]
    assert [ln["text"] for ln in lines] == ["line2", "warn"]
    assert_error(client.get("/api/v1/executions/ex_nope"), 404, "not_found")
    assert_error(client.post("/api/v1/functions/nope/invoke", content=b"x"), 404, "not_found")


def test_function_error_shape(client: TestClient) -> None:
    client.post("/api/v1/functions", json=FN)
    body = assert_error(
        client.post("/api/v1/functions/hello/invoke", content=b"raise"), 500, "function_error"
    )
    assert body["message"] == "ValueError: boom" and "execution_id" in body["details"]
    body = assert_error(client.post("/api/v1/functions/hello/invoke", content=b"slow"), 504, "timeout")


def test_async_invoke(client: TestClient) -> None:
    client.post("/api/v1/functions", json=FN)
    r = client.post("/api/v1/functions/hello/invoke?async=true", content=b"bg")
    assert r.status_code == 202
    ex_id = r.json()["execution_id"]
    assert r.json()["status_url"] == f"/api/v1/executions/{ex_id}"
    r2 = client.post("/api/v1/functions/hello/invoke-async", content=b"bg2")
    assert r2.status_code == 202
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.get(f"/api/v1/executions/{ex_id}").json()["status"] == "succeeded":
            break
        time.sleep(0.02)
    ex = client.get(f"/api/v1/executions/{ex_id}").json()
    assert ex["status"] == "succeeded" and ex["result"] == "echo:bg" and ex["kind"] == "async"
    listed = client.get("/api/v1/executions", params={"function": "hello"}).json()["executions"]
    assert {e["id"] for e in listed} >= {ex_id}
    assert_error(
        client.post("/api/v1/functions/hello/invoke-async?callback_url=ftp://x", content=b""),
        400,
        "invalid_input",
    )


def test_stream_invoke_sse(client: TestClient) -> None:
    client.post("/api/v1/functions", json=FN)
    with client.stream("POST", "/api/v1/functions/hello/invoke-stream", content=b"a b") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev = {
            k: v
            for k, _, v in (ln.partition(": ") for ln in block.splitlines() if ln and not ln.startswith(":"))
        }
        if ev:
            events.append(ev)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "result" and "stdout" in kinds
    result = json.loads(events[-1]["data"])
    assert result["body"] == "A B" and result["status"] == "succeeded"
    assert_error(client.post("/api/v1/functions/nope/invoke-stream", content=b""), 404, "not_found")


def test_saturation_gives_429_with_retry_after(client: TestClient, api_factory) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/v1/functions", json={**FN, "scale": {"min": 0, "max": 1}, "queue_size": 0})
    import threading

    import anyio

    gate_holder: dict = {}

    async def make_gate() -> None:
        import asyncio

        gate_holder["gate"] = asyncio.Event()

    client.portal.call(make_gate)  # type: ignore[union-attr]
    api_factory.gate = gate_holder["gate"]
    results: list[int] = []
    t = threading.Thread(
        target=lambda: results.append(client.post("/api/v1/functions/hello/invoke", content=b"1").status_code)
    )
    t.start()
    deadline = time.monotonic() + 5
    while api_factory.active < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    r = client.post("/api/v1/functions/hello/invoke", content=b"2")
    body = assert_error(r, 429, "capacity_exhausted")
    assert int(r.headers["retry-after"]) >= 1 and body["details"]["function"] == "hello"
    client.portal.call(anyio.to_thread.run_sync, lambda: None)  # type: ignore[union-attr]
    client.portal.call(lambda: _set(api_factory.gate))  # type: ignore[union-attr]
    t.join(10)
    assert results == [200]


async def _set(ev) -> None:  # type: ignore[no-untyped-def]
    ev.set()


def test_scale_route(client: TestClient, api_factory) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/v1/functions", json=FN)
    r = client.post("/api/v1/functions/hello/scale", json={"replicas": 2})
    assert r.json() == {"name": "hello", "namespace": "openfaas-fn", "min": 2, "max": 2, "replicas": 2}
    r = client.post("/api/v1/functions/hello/scale", json={"replicas": 0})
    assert r.json()["replicas"] == 0 and api_factory.live == 0
    assert_error(client.post("/api/v1/functions/hello/scale", json={}), 400, "invalid_input")
    assert_error(
        client.post("/api/v1/functions/hello/scale", json={"min": 3, "max": 2}), 400, "invalid_input"
    )


def test_payload_limit(small_payload_settings, api_factory) -> None:  # type: ignore[no-untyped-def]
    from faasd.api.app import create_app
    from faasd.platform.core import Platform

    s = small_payload_settings
    with TestClient(create_app(s, Platform(s, api_factory))) as c:
        c.post("/api/v1/functions", json=FN)
        assert_error(c.post("/api/v1/functions/hello/invoke", content=b"x" * 101), 413, "payload_too_large")

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(5):
                yield b"y" * 30

        assert_error(c.post("/api/v1/functions/hello/invoke", content=chunks()), 413, "payload_too_large")
        assert c.post("/api/v1/functions/hello/invoke", content=b"x" * 100).status_code == 200


def test_secrets_routes(client: TestClient) -> None:
    r = client.post("/api/v1/secrets", json={"name": "db", "value": "pw"})
    assert r.status_code == 201 and "value" not in r.json()
    assert_error(client.post("/api/v1/secrets", json={"name": "db", "value": "pw"}), 409, "conflict")
    assert client.get("/api/v1/secrets").json()["secrets"][0]["name"] == "db"
    assert client.put("/api/v1/secrets/db", json={"value": "pw2"}).status_code == 200
    assert_error(client.put("/api/v1/secrets/nope", json={"value": "x"}), 404, "not_found")
    assert client.delete("/api/v1/secrets/db").status_code == 204


def test_catch_all_500_is_json(client: TestClient, api_factory) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/v1/functions", json=FN)

    def explode(worker, inv):  # type: ignore[no-untyped-def]
        raise KeyError("bug")

    api_factory.behaviour = explode
    body = assert_error(client.post("/api/v1/functions/hello/invoke", content=b"x"), 500, "internal_error")
    assert body["details"]["error_id"].startswith("err_")


def test_metrics(client: TestClient) -> None:
    client.post("/api/v1/functions", json=FN)
    client.post("/api/v1/functions/hello/invoke", content=b"x")
    text = client.get("/metrics").text
    assert 'faasd_invocations_total{function="hello",status="succeeded"} 1.0' in text
    assert 'faasd_cold_starts_total{function="hello"} 1.0' in text
    assert "faasd_invocation_duration_seconds_bucket" in text
    assert "faasd_snapshot_operations_total" in text or "faasd_snapshot_operations" in text
    assert 'faasd_pool_workers{function="hello",state="idle"} 1.0' in text


# -- auth --------------------------------------------------------------------------------------
def test_auth_required_and_scopes(auth_client: tuple[TestClient, str]) -> None:
    c, admin = auth_client
    r = c.get("/api/v1/functions")
    assert_error(r, 401, "unauthorized")
    assert "Bearer" in r.headers["www-authenticate"]
    assert_error(c.get("/api/v1/functions", headers={"Authorization": "Bearer fdk_bad"}), 401, "unauthorized")
    assert c.get("/healthz").status_code == 200  # public
    h = {"Authorization": f"Bearer {admin}"}
    assert c.post("/api/v1/functions", json=FN, headers=h).status_code == 201
    r = c.post("/api/v1/keys", json={"name": "ci", "scopes": ["invoke"]}, headers=h)
    assert r.status_code == 201
    inv_key, inv_id = r.json()["key"], r.json()["id"]
    hi = {"Authorization": f"Bearer {inv_key}"}
    assert c.post("/api/v1/functions/hello/invoke", content=b"x", headers=hi).status_code == 200
    assert_error(c.post("/api/v1/functions", json={**FN, "name": "b"}, headers=hi), 403, "forbidden")
    assert_error(c.get("/api/v1/keys", headers=hi), 403, "forbidden")
    assert_error(c.post("/api/v1/execute", json={"command": "true"}, headers=hi), 403, "forbidden")
    keys = c.get("/api/v1/keys", headers=h).json()["keys"]
    assert all("key" not in k and "key_hash" not in k for k in keys)
    # OpenFaaS basic auth with the key as password
    basic = base64.b64encode(f"admin:{admin}".encode()).decode()
    assert c.get("/system/functions", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert c.delete(f"/api/v1/keys/{inv_id}", headers=h).status_code == 204
    assert_error(c.post("/api/v1/functions/hello/invoke", content=b"x", headers=hi), 401, "unauthorized")


def test_a_burst_beyond_a_database_integer_is_refused_with_422(auth_client: tuple[TestClient, str]) -> None:
    """A key's burst the database column cannot hold was a 500 from the database; now a 422 that creates
    no key, and the largest one is taken."""
    c, admin = auth_client
    h = {"Authorization": f"Bearer {admin}"}
    before = len(c.get("/api/v1/keys", headers=h).json()["keys"])
    body = {"name": "huge", "scopes": ["invoke"], "rate_limit_rps": 1.0, "burst": 2**31}
    assert_error(c.post("/api/v1/keys", json=body, headers=h), 422, "validation_error")
    assert len(c.get("/api/v1/keys", headers=h).json()["keys"]) == before
    r = c.post("/api/v1/keys", json={**body, "burst": 2**31 - 1}, headers=h)
    assert r.status_code == 201, r.text


def test_rate_limit_per_key(auth_client: tuple[TestClient, str]) -> None:
    c, admin = auth_client
    h = {"Authorization": f"Bearer {admin}"}
    r = c.post(
        "/api/v1/keys",
        json={"name": "slow", "scopes": ["invoke"], "rate_limit_rps": 0.1, "burst": 2},
        headers=h,
    )
    hk = {"Authorization": f"Bearer {r.json()['key']}"}
    assert c.get("/api/v1/functions", headers=hk).status_code == 200
    assert c.get("/api/v1/functions", headers=hk).status_code == 200
    r = c.get("/api/v1/functions", headers=hk)
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert c.get("/api/v1/functions", headers=h).status_code == 200  # other keys unaffected


# -- OpenFaaS ----------------------------------------------------------------------------------
DEPLOY = {
    "service": "of-fn",
    "image": "faasd/python:latest",
    "envProcess": "cat",
    "envVars": {"A": "1"},
    "labels": {"com.openfaas.scale.min": "0", "com.openfaas.scale.max": "3"},
    "annotations": {"note": "x"},
    "limits": {"memory": "128Mi", "cpu": "500m"},
    "secrets": [],
}


def test_openfaas_routes(client: TestClient) -> None:
    assert client.post("/system/functions", json=DEPLOY).status_code == 202
    assert_error(client.post("/system/functions", json=DEPLOY), 409, "conflict")
    fns = client.get("/system/functions").json()
    assert isinstance(fns, list) and fns[0]["name"] == "of-fn"
    st = client.get("/system/function/of-fn").json()
    assert st["envProcess"] == "cat" and st["limits"]["memory"] == "128Mi" and st["limits"]["cpu"] == "500m"
    assert st["labels"]["com.openfaas.scale.max"] == "3" and st["replicas"] == 0 and st["namespace"]
    native = client.get("/api/v1/functions/of-fn").json()
    assert native["runtime"] == "exec" and native["command"] == ["/bin/sh", "-c", "cat"]
    assert native["scale"] == {"min": 0, "max": 3} and native["limits"]["cpu_cores"] == 0.5
    assert client.put("/system/functions", json={**DEPLOY, "envVars": {"A": "2"}}).status_code == 202
    r = client.post("/function/of-fn", content=b"ping")
    assert r.status_code == 200 and r.content == b"echo:ping" and r.headers["x-call-id"].startswith("ex_")
    assert client.post("/function/of-fn.openfaas-fn", content=b"ns").content == b"echo:ns"
    assert client.get("/system/namespaces").json() == ["openfaas-fn"]
    r = client.post("/function/of-fn/sub/path?q=1", content=b"p")
    ex = client.get(f"/api/v1/executions/{r.headers['x-call-id']}").json()
    assert ex["status"] == "succeeded"
    r = client.post("/async-function/of-fn", content=b"later")
    assert r.status_code == 202 and r.headers["x-call-id"].startswith("ex_")
    assert (
        client.post("/system/scale-function/of-fn", json={"serviceName": "of-fn", "replicas": 2}).status_code
        == 202
    )
    assert client.get("/system/function/of-fn").json()["replicas"] == 2
    info = client.get("/system/info").json()
    assert info["provider"]["provider"] == "faasd" and "release" in info["version"]
    r = client.get("/system/logs", params={"name": "of-fn", "tail": 2})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(ln) for ln in r.text.splitlines()]
    assert len(lines) == 2 and {"name", "instance", "timestamp", "text"} <= set(lines[0])
    assert client.request("DELETE", "/system/functions", json={"functionName": "of-fn"}).status_code == 202
    assert_error(client.get("/system/function/of-fn"), 404, "not_found")


def test_openfaas_secrets(client: TestClient) -> None:
    assert client.post("/system/secrets", json={"name": "s1", "value": "v"}).status_code == 201
    raw = base64.b64encode(b"\x00\x01").decode()
    assert client.post("/system/secrets", json={"name": "s2", "rawValue": raw}).status_code == 201
    assert {s["name"] for s in client.get("/system/secrets").json()} == {"s1", "s2"}
    assert client.put("/system/secrets", json={"name": "s1", "value": "w"}).status_code == 200
    assert client.request("DELETE", "/system/secrets", json={"name": "s1"}).status_code == 200
    assert_error(client.request("DELETE", "/system/secrets", json={"name": "s1"}), 404, "not_found")


def test_openfaas_memory_parsing() -> None:
    from faasd.api.routes_openfaas import parse_cpu, parse_memory_mb

    assert (
        parse_memory_mb("128Mi") == 128 and parse_memory_mb("1Gi") == 1024 and parse_memory_mb("256M") == 244
    )
    assert parse_cpu("500m") == 0.5 and parse_cpu("2") == 2.0


def test_healthz_reports_database_down(client: TestClient) -> None:
    platform = client.app.state.platform  # type: ignore[attr-defined]

    def down() -> None:
        raise OSError("connection refused")

    platform.db.ping = down
    assert_error(client.get("/healthz"), 503, "unavailable")
