"""Malicious API use against the real app (real platform, SQLite, image store, sandbox manager).

Isolation by scope (admin ⊃ deploy ⊃ invoke): a key can never do more than its scope, nor mint or delete keys
to get more, and secret values never leave the server. Isolation between tenants (namespaces) is in
``test_security_tenants.py``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.daemon import build_platform

pytestmark = [pytest.mark.security]


@dataclass
class Api:
    client: httpx.AsyncClient
    admin: str
    deploy: str
    invoke: str
    invoke_id: str
    admin_id: str

    def h(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    s = settings.model_copy(update={"auth": True})
    platform = build_platform(s, ())
    admin = platform.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert admin is not None
    await platform.start()
    app = create_app(s, platform, manage_platform=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://faasd.test"
        ) as client:
            auth = {"Authorization": f"Bearer {admin}"}
            keys = {}
            for scope in ("deploy", "invoke"):
                r = await client.post(
                    "/api/v1/keys", json={"name": f"k-{scope}", "scopes": [scope]}, headers=auth
                )
                assert r.status_code == 201, r.text
                keys[scope] = r.json()
            listed = (await client.get("/api/v1/keys", headers=auth)).json()["keys"]
            admin_id = next(k["id"] for k in listed if k["name"] == "bootstrap-admin")
            yield Api(
                client, admin, keys["deploy"]["key"], keys["invoke"]["key"], keys["invoke"]["id"], admin_id
            )
    finally:
        await platform.close()
        platform.db.dispose()


FUNCTION = {"name": "evil", "image": "python:3", "runtime": "python", "handler": "handler:handle"}


def assert_forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, (r.request.method, r.request.url.path, r.status_code, r.text)
    assert r.json()["error"] == "forbidden"


async def test_invoke_key_cannot_deploy_or_touch_secrets(api: Api) -> None:
    c, h = api.client, api.h(api.invoke)
    for r in [
        await c.post("/api/v1/functions", json=FUNCTION, headers=h),
        await c.put("/api/v1/functions/evil", json=FUNCTION, headers=h),
        await c.delete("/api/v1/functions/evil", headers=h),
        await c.post("/api/v1/functions/evil/scale", json={"replicas": 3}, headers=h),
        await c.get("/api/v1/functions/evil/logs", headers=h),
        await c.get("/api/v1/secrets", headers=h),
        await c.post("/api/v1/secrets", json={"name": "x", "value": "y"}, headers=h),
        await c.put("/api/v1/secrets/x", json={"value": "y"}, headers=h),
        await c.delete("/api/v1/secrets/x", headers=h),
        await c.post("/api/v1/execute", json={"image": "python:3", "command": ["id"]}, headers=h),
        # OpenFaaS gateway routes
        await c.post("/system/functions", json={"service": "evil", "image": "python:3"}, headers=h),
        await c.put("/system/functions", json={"service": "evil", "image": "python:3"}, headers=h),
        await c.request("DELETE", "/system/functions", json={"functionName": "evil"}, headers=h),
        await c.get("/system/secrets", headers=h),
        await c.post("/system/secrets", json={"name": "x", "value": "y"}, headers=h),
    ]:
        assert_forbidden(r)


async def test_non_admin_keys_cannot_mint_list_or_delete_keys(api: Api) -> None:
    c = api.client
    for token in (api.invoke, api.deploy):
        h = api.h(token)
        assert_forbidden(await c.get("/api/v1/keys", headers=h))
        assert_forbidden(
            await c.post("/api/v1/keys", json={"name": "escalate", "scopes": ["admin"]}, headers=h)
        )
        assert_forbidden(await c.delete(f"/api/v1/keys/{api.admin_id}", headers=h))
    # the admin key still works: nothing was deleted
    assert (await c.get("/api/v1/keys", headers=api.h(api.admin))).status_code == 200


async def test_secret_values_never_returned(api: Api) -> None:
    c, h = api.client, api.h(api.deploy)
    value = "top-secret-value-42"
    assert (
        await c.post("/api/v1/secrets", json={"name": "db", "value": value}, headers=h)
    ).status_code == 201
    for path in ("/api/v1/secrets", "/system/secrets"):
        for token in (api.deploy, api.admin):
            r = await c.get(path, headers=api.h(token))
            assert r.status_code == 200 and value not in r.text, (path, r.text)
    r = await c.get("/api/v1/secrets/db", headers=api.h(api.admin))
    assert value not in r.text


async def test_missing_bad_and_revoked_credentials_rejected(api: Api) -> None:
    c = api.client
    assert (await c.get("/api/v1/functions")).status_code == 401
    bad = [
        {"Authorization": "Bearer fdk_000000000000_forged"},
        {"Authorization": "Bearer " + api.invoke[:-1] + ("A" if api.invoke[-1] != "A" else "B")},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
        {"Authorization": "Token " + api.admin},
        {"Authorization": "Bearer "},
    ]
    for h in bad:
        r = await c.get("/api/v1/functions", headers=h)
        assert r.status_code == 401, (h, r.status_code, r.text)
        assert r.json()["error"] in ("unauthorized", "auth_error", "unauthenticated"), r.text
    # Basic with the key as password is accepted (faas-cli style)
    basic = base64.b64encode(f"admin:{api.invoke}".encode()).decode()
    assert (await c.get("/api/v1/functions", headers={"Authorization": f"Basic {basic}"})).status_code == 200
    # revoke the invoke key: it stops working at once
    r = await c.delete(f"/api/v1/keys/{api.invoke_id}", headers=api.h(api.admin))
    assert r.status_code == 204
    assert (await c.get("/api/v1/functions", headers=api.h(api.invoke))).status_code == 401


async def test_metrics_and_info_need_a_key(api: Api) -> None:
    for path in ("/metrics", "/api/v1/info", "/system/info", "/api/v1/executions"):
        assert (await api.client.get(path)).status_code == 401, path
    assert (await api.client.get("/healthz")).status_code == 200


async def test_rate_limited_key_cannot_flood(api: Api) -> None:
    c = api.client
    r = await c.post(
        "/api/v1/keys",
        json={"name": "slow", "scopes": ["invoke"], "rate_limit_rps": 0.5, "burst": 2},
        headers=api.h(api.admin),
    )
    assert r.status_code == 201, r.text
    h = api.h(r.json()["key"])
    codes = [(await c.get("/api/v1/functions", headers=h)).status_code for _ in range(6)]
    assert codes[:2] == [200, 200] and 429 in codes[2:], codes
    limited = await c.get("/api/v1/functions", headers=h)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]
    # other keys are not affected by this key's bucket
    assert (await c.get("/api/v1/functions", headers=api.h(api.invoke))).status_code == 200
