"""Namespaces against a real daemon over HTTP: faas-cli-shaped requests with ``namespace`` (deploy PUT then
POST, list/describe/delete with ``?namespace=``, ``/function/<name>.<namespace>``), a tenant's key used as
faas-cli would use it (Basic auth), and the admin key made at first start spanning every namespace."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

UA = {"User-Agent": "faas-cli/0.16.11"}


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv:
        yield srv


def _basic(key: str) -> dict[str, str]:
    return {**UA, "Authorization": "Basic " + base64.b64encode(f"admin:{key}".encode()).decode()}


def _deploy(http: httpx.Client, auth: dict[str, str], body: dict[str, object]) -> list[int]:
    statuses = []
    for method in ("PUT", "POST"):
        r = http.request(method, "/system/functions", content=json.dumps(body), headers=auth)
        statuses.append(r.status_code)
        if r.status_code != 404:
            break
    assert statuses[-1] == 202, statuses
    return statuses


def test_faas_cli_requests_with_a_namespace_and_a_tenant_key(server: FaasdServer) -> None:
    ns = "t-" + uuid.uuid4().hex[:8]
    name = "echo-fn"
    admin = _basic(server.api_key)
    bearer = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, timeout=180) as http:
        assert http.get("/system/namespaces", headers=admin).json() == ["openfaas-fn"]
        r = http.post("/api/v1/namespaces", json={"name": ns, "max_sandboxes": 4}, headers=bearer)
        assert r.status_code == 201, r.text
        assert sorted(http.get("/system/namespaces", headers=admin).json()) == sorted(["openfaas-fn", ns])
        tenant_key = http.post(
            "/api/v1/keys", json={"name": ns, "scopes": ["deploy"], "namespace": ns}, headers=bearer
        ).json()["key"]
        tenant = _basic(tenant_key)

        body = {
            "service": name,
            "image": "faasd/python:latest",
            "envProcess": "cat",
            "envVars": {"WHO": ns},
            "namespace": ns,
            "labels": {"com.openfaas.scale.min": "0"},
        }
        assert _deploy(http, admin, body) == [404, 202]
        # the same name in the default namespace is another function
        assert _deploy(http, admin, {**body, "namespace": "openfaas-fn", "envProcess": "rev"}) == [404, 202]
        listed = http.get("/system/functions", params={"namespace": ns}, headers=admin).json()
        assert [(f["name"], f["namespace"]) for f in listed] == [(name, ns)]
        d = http.get(f"/system/function/{name}", params={"namespace": ns}, headers=admin).json()
        assert d["envVars"] == {"WHO": ns} and d["namespace"] == ns

        # invocation by OpenFaaS address, no credentials (as the gateway)
        assert http.post(f"/function/{name}.{ns}", content=b"abc", headers=UA).content == b"abc"
        assert http.post(f"/function/{name}", content=b"abc", headers=UA).content.strip() == b"cba"
        assert http.post(f"/function/{name}.openfaas-fn", content=b"xy", headers=UA).content.strip() == b"yx"

        # the tenant's key: its namespace only
        assert http.get("/system/namespaces", headers=tenant).json() == [ns]
        mine = http.get("/system/functions", headers=tenant).json()
        assert [(f["name"], f["namespace"]) for f in mine] == [(name, ns)]
        r = http.get("/system/functions", params={"namespace": "openfaas-fn"}, headers=tenant)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = http.request("DELETE", "/system/functions", json={"functionName": name}, headers=tenant)
        assert r.status_code == 202  # its own echo-fn, not the default namespace's
        assert http.get(f"/system/function/{name}", headers=admin).status_code == 200
        assert (
            http.get(f"/system/function/{name}", params={"namespace": ns}, headers=admin).status_code == 404
        )
        r = http.get(f"/api/v1/functions/{name}", headers={"Authorization": f"Bearer {tenant_key}"})
        assert r.status_code == 404

        # the admin deletes the default namespace's function and the namespace (empty once its key goes)
        r = http.request("DELETE", "/system/functions", json={"functionName": name}, headers=admin)
        assert r.status_code == 202
        r = http.delete(f"/api/v1/namespaces/{ns}", headers=bearer)
        assert r.status_code == 409 and r.json()["details"]["contents"]["keys"], r.text
        for k in http.get("/api/v1/keys", headers=bearer).json()["keys"]:
            if k["namespace"] == ns:
                assert http.delete(f"/api/v1/keys/{k['id']}", headers=bearer).status_code == 204
        assert http.delete(f"/api/v1/namespaces/{ns}", headers=bearer).status_code == 204
        assert http.get("/system/namespaces", headers=admin).json() == ["openfaas-fn"]
