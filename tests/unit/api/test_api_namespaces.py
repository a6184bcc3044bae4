"""Namespaces through the real app (SQLite, fake workers): tenant isolation of functions, secrets and
executions, namespaced keys, OpenFaaS's namespace field, quotas, namespace deletion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions

pytestmark = pytest.mark.unit

FN = {"name": "hello", "image": "faasd/python:latest", "scale": {"min": 0, "max": 2}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Tenants:
    def __init__(self, client: TestClient, admin: str, platform: Platform) -> None:
        self.c = client
        self.platform = platform
        self.admin = bearer(admin)
        for ns in ("team-a", "team-b"):
            assert self.c.post("/api/v1/namespaces", json={"name": ns}, headers=self.admin).status_code == 201
        self.a = self.key("team-a")
        self.b = self.key("team-b")

    def key(self, namespace: str | None, scopes: list[str] | None = None) -> dict[str, str]:
        body = {"name": f"k-{namespace}", "scopes": scopes or ["deploy"], "namespace": namespace}
        r = self.c.post("/api/v1/keys", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        assert r.json()["namespace"] == namespace
        return bearer(r.json()["key"])


def _tenants(tmp_path: Path, factory: Any, *, function_auth: bool) -> Iterator[Tenants]:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=True
    )
    s.data_dir.mkdir(parents=True)
    s.function_auth = function_auth
    p = Platform(s, factory, options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        yield Tenants(c, token, p)


@pytest.fixture
def t(tmp_path: Path, api_factory: Any) -> Iterator[Tenants]:
    yield from _tenants(tmp_path, api_factory, function_auth=False)


@pytest.fixture
def t_fauth(tmp_path: Path, api_factory: Any) -> Iterator[Tenants]:
    yield from _tenants(tmp_path, api_factory, function_auth=True)


def err(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == code
    return dict(resp.json())


def test_same_name_in_two_namespaces_and_lists_per_key(t: Tenants) -> None:
    ra = t.c.post("/api/v1/functions", json=FN, headers=t.a)
    rb = t.c.post("/api/v1/functions", json={**FN, "env": {"WHO": "b"}}, headers=t.b)
    assert ra.status_code == 201 and rb.status_code == 201
    assert ra.json()["namespace"] == "team-a" and rb.json()["namespace"] == "team-b"
    assert ra.json()["name"] == rb.json()["name"] == "hello"
    listed_a = t.c.get("/api/v1/functions", headers=t.a).json()["functions"]
    assert [(f["name"], f["namespace"]) for f in listed_a] == [("hello", "team-a")]
    every = t.c.get("/api/v1/functions", headers=t.admin).json()["functions"]
    assert sorted(f["namespace"] for f in every) == ["team-a", "team-b"]
    only_b = t.c.get("/api/v1/functions?namespace=team-b", headers=t.admin).json()["functions"]
    assert [f["env"] for f in only_b] == [{"WHO": "b"}]
    # each key invokes its own "hello" (different workers: env differs)
    assert t.c.post("/api/v1/functions/hello/invoke", content=b"x", headers=t.a).status_code == 200
    assert t.c.post("/api/v1/functions/hello/invoke", content=b"x", headers=t.b).status_code == 200
    assert t.platform.runner.live_workers("hello.team-a") == 1
    assert t.platform.runner.live_workers("hello.team-b") == 1


def test_other_tenants_function_is_absent(t: Tenants) -> None:
    assert t.c.post("/api/v1/functions", json={**FN, "name": "only-a"}, headers=t.a).status_code == 201
    for method, path in [
        ("GET", "/api/v1/functions/only-a"),
        ("POST", "/api/v1/functions/only-a/invoke"),
        ("POST", "/api/v1/functions/only-a/invoke-async"),
        ("POST", "/api/v1/functions/only-a/invoke-stream"),
        ("GET", "/api/v1/functions/only-a/logs"),
        ("DELETE", "/api/v1/functions/only-a"),
        ("GET", "/system/function/only-a"),
    ]:
        err(t.c.request(method, path, headers=t.b), 404, "not_found")
    err(t.c.post("/api/v1/functions/only-a/scale", json={"replicas": 1}, headers=t.b), 404, "not_found")
    err(t.c.put("/api/v1/functions/only-a", json={**FN, "name": "only-a"}, headers=t.b), 404, "not_found")
    # a dotted name cannot reach into another namespace through the id scheme
    err(t.c.get("/api/v1/functions/only-a.team-a", headers=t.b), 404, "not_found")
    assert t.c.get("/api/v1/functions", headers=t.b).json()["functions"] == []
    assert t.c.get("/system/functions", headers=t.b).json() == []
    # naming the other namespace outright is a 403
    err(t.c.get("/api/v1/functions/only-a?namespace=team-a", headers=t.b), 403, "forbidden")
    err(t.c.get("/api/v1/functions?namespace=team-a", headers=t.b), 403, "forbidden")
    err(t.c.post("/api/v1/functions", json={**FN, "namespace": "team-a"}, headers=t.b), 403, "forbidden")
    # still there for its owner
    assert t.c.get("/api/v1/functions/only-a", headers=t.a).status_code == 200


def test_other_tenants_secret_is_absent(t: Tenants) -> None:
    r = t.c.post("/api/v1/secrets", json={"name": "db.pw", "value": "s3cret"}, headers=t.a)
    assert r.status_code == 201 and r.json() == {**r.json(), "name": "db.pw", "namespace": "team-a"}
    assert t.c.get("/api/v1/secrets", headers=t.b).json()["secrets"] == []
    assert t.c.get("/system/secrets", headers=t.b).json() == []
    err(t.c.put("/api/v1/secrets/db.pw", json={"value": "x"}, headers=t.b), 404, "not_found")
    err(t.c.delete("/api/v1/secrets/db.pw", headers=t.b), 404, "not_found")
    err(t.c.request("DELETE", "/system/secrets", json={"name": "db.pw"}, headers=t.b), 404, "not_found")
    # a function of team-b cannot mount team-a's secret
    body = err(
        t.c.post("/api/v1/functions", json={**FN, "secrets": ["db.pw"]}, headers=t.b), 400, "invalid_input"
    )
    assert "db.pw" in body["message"]
    # the same name in team-b is another secret
    assert t.c.post("/api/v1/secrets", json={"name": "db.pw", "value": "b"}, headers=t.b).status_code == 201
    assert t.platform.secrets.values(["db.pw"], "team-a") == {"db.pw": b"s3cret"}
    assert t.platform.secrets.values(["db.pw"], "team-b") == {"db.pw": b"b"}
    names = {
        (s["name"], s["namespace"]) for s in t.c.get("/api/v1/secrets", headers=t.admin).json()["secrets"]
    }
    assert names == {("db.pw", "team-a"), ("db.pw", "team-b")}


def test_worker_gets_its_own_namespaces_secret(t: Tenants, api_factory: Any) -> None:
    t.c.post("/api/v1/secrets", json={"name": "tok", "value": "A"}, headers=t.a)
    t.c.post("/api/v1/secrets", json={"name": "tok", "value": "B"}, headers=t.b)
    t.c.post("/api/v1/functions", json={**FN, "secrets": ["tok"]}, headers=t.b)
    assert t.c.post("/api/v1/functions/hello/invoke", content=b"", headers=t.b).status_code == 200
    assert [dict(w.config.secrets) for w in api_factory.started] == [{"tok": b"B"}]


def test_other_tenants_execution_is_absent(t: Tenants) -> None:
    t.c.post("/api/v1/functions", json=FN, headers=t.a)
    ex_id = t.c.post("/api/v1/functions/hello/invoke", content=b"x", headers=t.a).headers["x-execution-id"]
    mine = t.c.get(f"/api/v1/executions/{ex_id}", headers=t.a).json()
    assert mine["function"] == "hello" and mine["namespace"] == "team-a"
    err(t.c.get(f"/api/v1/executions/{ex_id}", headers=t.b), 404, "not_found")
    err(t.c.get(f"/api/v1/executions/{ex_id}/logs", headers=t.b), 404, "not_found")
    assert t.c.get("/api/v1/executions", headers=t.b).json()["executions"] == []
    assert t.c.get("/api/v1/executions?function=hello", headers=t.b).json()["executions"] == []
    assert [e["id"] for e in t.c.get("/api/v1/executions", headers=t.a).json()["executions"]] == [ex_id]
    assert [e["id"] for e in t.c.get("/api/v1/executions", headers=t.admin).json()["executions"]] == [ex_id]
    assert t.c.get("/api/v1/executions?namespace=openfaas-fn", headers=t.admin).json()["executions"] == []


def test_faas_cli_shaped_requests_with_namespace(t: Tenants) -> None:
    dep = {
        "service": "cli-fn",
        "image": "faasd/python:latest",
        "namespace": "team-a",
        "annotations": {"faasd.runtime": "python"},
    }
    assert t.c.post("/system/functions", json=dep, headers=t.admin).status_code == 202
    assert t.c.get("/system/functions", headers=t.admin).json() == []  # the default namespace
    listed = t.c.get("/system/functions?namespace=team-a", headers=t.admin).json()
    assert [(f["name"], f["namespace"]) for f in listed] == [("cli-fn", "team-a")]
    assert (
        t.c.put("/system/functions", json={**dep, "envVars": {"A": "1"}}, headers=t.admin).status_code == 202
    )
    assert t.c.get("/system/function/cli-fn?namespace=team-a", headers=t.admin).json()["envVars"] == {
        "A": "1"
    }
    assert t.c.post("/function/cli-fn.team-a", content=b"hi").content == b"echo:hi"
    err(t.c.post("/function/cli-fn", content=b"hi"), 404, "not_found")  # not in the default namespace
    assert sorted(t.c.get("/system/namespaces", headers=t.admin).json()) == [
        "openfaas-fn",
        "team-a",
        "team-b",
    ]
    assert t.c.get("/system/namespaces", headers=t.a).json() == ["team-a"]
    sec = {"name": "s1", "value": "v", "namespace": "team-a"}
    assert t.c.post("/system/secrets", json=sec, headers=t.admin).status_code == 201
    assert t.c.get("/system/secrets?namespace=team-a", headers=t.admin).json() == [
        {"name": "s1", "namespace": "team-a"}
    ]
    scale = {"serviceName": "cli-fn", "namespace": "team-a", "replicas": 1}
    assert t.c.post("/system/scale-function/cli-fn", json=scale, headers=t.admin).status_code == 202
    lines = t.c.get("/system/logs?name=cli-fn&namespace=team-a", headers=t.admin)
    assert lines.status_code == 200
    delete = {"functionName": "cli-fn", "namespace": "team-a"}
    assert t.c.request("DELETE", "/system/functions", json=delete, headers=t.admin).status_code == 202
    assert t.c.get("/system/functions?namespace=team-a", headers=t.admin).json() == []
    # a namespaced key's faas-cli requests without a namespace land in its namespace
    assert t.c.post("/system/functions", json={**dep, "namespace": ""}, headers=t.b).status_code == 202
    assert [f["namespace"] for f in t.c.get("/system/functions", headers=t.b).json()] == ["team-b"]


def test_function_auth_keeps_invocations_in_the_keys_namespace(t_fauth: Tenants) -> None:
    t = t_fauth
    t.c.post("/api/v1/functions", json={**FN, "name": "only-a"}, headers=t.a)
    assert t.c.post("/function/only-a.team-a", content=b"1", headers=t.a).status_code == 200
    assert t.c.post("/function/only-a", content=b"1", headers=t.a).status_code == 200  # its own namespace
    err(t.c.post("/function/only-a.team-a", content=b"1", headers=t.b), 404, "not_found")
    err(t.c.post("/async-function/only-a.team-a", content=b"1", headers=t.b), 404, "not_found")
    err(t.c.post("/function/only-a", content=b"1", headers=t.b), 404, "not_found")


def test_keys_bound_to_namespaces(t: Tenants) -> None:
    err(
        t.c.post(
            "/api/v1/keys", json={"name": "x", "scopes": ["admin"], "namespace": "team-a"}, headers=t.admin
        ),
        400,
        "invalid_input",
    )
    err(
        t.c.post(
            "/api/v1/keys", json={"name": "x", "scopes": ["invoke"], "namespace": "nope"}, headers=t.admin
        ),
        404,
        "not_found",
    )
    # a namespaced key cannot manage keys or namespaces
    err(t.c.get("/api/v1/keys", headers=t.a), 403, "forbidden")
    err(t.c.post("/api/v1/namespaces", json={"name": "mine"}, headers=t.a), 403, "forbidden")
    # it sees its own namespace (quotas and use), not the others
    assert [n["name"] for n in t.c.get("/api/v1/namespaces", headers=t.a).json()["namespaces"]] == ["team-a"]
    assert t.c.get("/api/v1/namespaces/team-a", headers=t.a).status_code == 200
    err(t.c.get("/api/v1/namespaces/team-b", headers=t.a), 404, "not_found")
    # an unbound (pre-namespace style) deploy key spans every namespace
    anyns = t.key(None)
    t.c.post("/api/v1/functions", json=FN, headers=t.a)
    assert t.c.get("/api/v1/functions/hello?namespace=team-a", headers=anyns).status_code == 200
    err(t.c.get("/api/v1/functions/hello", headers=anyns), 404, "not_found")  # default namespace


def test_quotas_refuse_with_429_and_create_nothing(t: Tenants, api_factory: Any) -> None:
    r = t.c.patch(
        "/api/v1/namespaces/team-a", json={"max_sandboxes": 1, "max_memory_mb": 300}, headers=t.admin
    )
    assert r.status_code == 200 and r.json()["quotas"]["max_sandboxes"] == 1
    body = err(
        t.c.post("/api/v1/functions", json={**FN, "scale": {"min": 2, "max": 2}}, headers=t.a),
        429,
        "quota_exceeded",
    )
    assert body["details"]["quota"] == "max_sandboxes" and body["details"]["limit"] == 1
    assert "max_sandboxes" in body["message"] and "limit is 1" in body["message"]
    assert t.c.get("/api/v1/functions", headers=t.a).json()["functions"] == []
    big = {**FN, "name": "big", "limits": {"memory_mb": 512}}
    assert t.c.post("/api/v1/functions", json=big, headers=t.a).status_code == 201
    body = err(t.c.post("/api/v1/functions/big/invoke", content=b"", headers=t.a), 429, "quota_exceeded")
    assert body["details"]["quota"] == "max_memory_mb" and api_factory.started == []
    assert t.c.post("/api/v1/functions", json=FN, headers=t.a).status_code == 201
    assert t.c.post("/api/v1/functions/hello/invoke", content=b"", headers=t.a).status_code == 200
    assert t.c.get("/api/v1/namespaces/team-a", headers=t.a).json()["usage"]["sandboxes"] == 1
    t.c.post("/api/v1/functions", json={**FN, "name": "second"}, headers=t.a)
    body = err(t.c.post("/api/v1/functions/second/invoke", content=b"", headers=t.a), 429, "quota_exceeded")
    assert body["details"] == {**body["details"], "quota": "max_sandboxes", "used": 1, "requested": 1}
    assert len(api_factory.started) == 1
    err(t.c.post("/api/v1/functions/hello/scale", json={"replicas": 2}, headers=t.a), 429, "quota_exceeded")
    # other namespaces are not bound by team-a's quotas
    t.c.post("/api/v1/functions", json={**FN, "scale": {"min": 0, "max": 3}}, headers=t.b)
    assert t.c.post("/api/v1/functions/hello/scale", json={"replicas": 2}, headers=t.b).status_code == 200


def test_namespace_lifecycle(t: Tenants) -> None:
    err(t.c.post("/api/v1/namespaces", json={"name": "Bad_Name"}, headers=t.admin), 400, "invalid_input")
    err(t.c.post("/api/v1/namespaces", json={"name": "team-a"}, headers=t.admin), 409, "conflict")
    err(t.c.delete("/api/v1/namespaces/openfaas-fn", headers=t.admin), 409, "conflict")
    t.c.post("/api/v1/functions", json=FN, headers=t.a)
    ex_id = t.c.post("/api/v1/functions/hello/invoke", content=b"", headers=t.a).headers["x-execution-id"]
    body = err(t.c.delete("/api/v1/namespaces/team-a", headers=t.admin), 409, "conflict")
    assert body["details"]["contents"]["functions"] == ["hello"] and body["details"]["contents"]["keys"]
    assert t.c.delete("/api/v1/functions/hello", headers=t.a).status_code == 204
    for k in t.c.get("/api/v1/keys", headers=t.admin).json()["keys"]:
        if k["namespace"] == "team-a":
            assert t.c.delete(f"/api/v1/keys/{k['id']}", headers=t.admin).status_code == 204
    assert t.c.delete("/api/v1/namespaces/team-a", headers=t.admin).status_code == 204
    err(t.c.get("/api/v1/namespaces/team-a", headers=t.admin), 404, "not_found")
    err(t.c.get(f"/api/v1/executions/{ex_id}", headers=t.admin), 404, "not_found")  # history purged
    err(t.c.post("/api/v1/functions", json={**FN, "namespace": "team-a"}, headers=t.admin), 404, "not_found")


def test_quotas_beyond_a_database_integer_are_refused_with_422(t: Tenants) -> None:
    """A quota the database columns cannot hold (found by the contract test: 2**77 was a 500) is a 422 on
    create and on update, and creates or changes nothing; the largest one is taken."""
    too_big = 2**31
    for field in ("max_sandboxes", "max_memory_mb", "max_disk_mb", "max_snapshots"):
        body = {"name": "team-big", field: too_big}
        err(t.c.post("/api/v1/namespaces", json=body, headers=t.admin), 422, "validation_error")
        err(t.c.get("/api/v1/namespaces/team-big", headers=t.admin), 404, "not_found")
        patch = t.c.patch("/api/v1/namespaces/team-a", json={field: 2**77}, headers=t.admin)
        err(patch, 422, "validation_error")
        assert t.c.get("/api/v1/namespaces/team-a", headers=t.admin).json()["quotas"][field] is None
    largest = {"name": "team-big", "max_sandboxes": too_big - 1}
    r = t.c.post("/api/v1/namespaces", json=largest, headers=t.admin)
    assert r.status_code == 201, r.text
    assert r.json()["quotas"]["max_sandboxes"] == too_big - 1


def test_shared_state_features_refuse_namespaced_keys(t: Tenants) -> None:
    for method, path, body in [
        ("POST", "/ui/api/session", None),
        ("GET", "/ui/api/lineage", None),
        ("GET", "/ui/api/events", None),
        ("GET", "/metrics", None),
        ("POST", "/api/v1/execute", {"command": "true", "cache_key": "k"}),
        ("POST", "/api/v1/execute", {"command": "true", "mode": "persistent"}),
        ("POST", "/api/v1/fork", {"branch_from": "snap-x", "commands": ["true"]}),
        ("POST", "/api/v1/prewarm", {"image": "faasd/python:latest"}),
        ("GET", "/api/v1/logs/rq_x/stream", None),
    ]:
        if path == "/ui/api/session":
            token = t.a["Authorization"].removeprefix("Bearer ")
            r = t.c.post(path, json={"key": token}, headers={"Origin": "http://testserver"})
        else:
            r = t.c.request(method, path, json=body, headers=t.a)
        err(r, 403, "forbidden")
    # unbound keys keep them
    assert t.c.get("/metrics", headers=t.admin).status_code == 200
    assert t.c.get("/ui/api/lineage", headers=t.admin).status_code == 200
