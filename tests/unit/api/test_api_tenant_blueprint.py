"""Blueprint routes (``/api/blueprint/functions/...``) and namespaces through the real app (SQLite, fake
workers): a key bound to ``team-b`` cannot read, health-check, invoke, warm or delete ``team-a``'s blueprint
function (404 as an absent one), naming ``team-a`` is a 403, and each key reaches its own function of the
same name. (The zip ``PUT`` needs a real image store: ``tests/security/test_security_tenants.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.blueprint import BLUEPRINT_LABEL
from faasd.platform.core import Platform, PlatformOptions

pytestmark = pytest.mark.unit

BP = {
    "name": "bp",
    "image": "faasd/python:latest",
    "scale": {"min": 0, "max": 2},
    "labels": {BLUEPRINT_LABEL: "true"},
}
URL = "/api/blueprint/functions/bp"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def env(tmp_path: Path, api_factory: Any) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=True
    )
    s.data_dir.mkdir(parents=True)
    p = Platform(s, api_factory, options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    admin = bearer(token)
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        keys = {"admin": admin}
        for ns in ("team-a", "team-b"):
            assert c.post("/api/v1/namespaces", json={"name": ns}, headers=admin).status_code == 201
            body = {"name": ns, "scopes": ["deploy"], "namespace": ns}
            r = c.post("/api/v1/keys", json=body, headers=admin)
            assert r.status_code == 201, r.text
            keys[ns] = bearer(r.json()["key"])
        yield c, keys


def _absent(r: Any) -> None:
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"


def test_other_tenants_blueprint_function_is_absent(
    env: tuple[TestClient, dict[str, dict[str, str]]], api_factory: Any
) -> None:
    c, k = env
    a, b = k["team-a"], k["team-b"]
    assert c.post("/api/v1/functions", json={**BP, "env": {"WHO": "a"}}, headers=a).status_code == 201
    assert c.get(URL, headers=a).json()["namespace"] == "team-a"
    # what an id that does not exist gets: the same status and message
    never = c.get("/api/blueprint/functions/never", headers=b)
    _absent(never)
    for method, path, body in [
        ("GET", URL, None),
        ("GET", URL + "/health", None),
        ("POST", URL + "/invoke", {"job_id": 1, "args": "x"}),
        ("POST", URL + "/warm", None),
        ("DELETE", URL, None),
    ]:
        r = c.request(method, path, json=body, headers=b)
        _absent(r)
        assert r.json()["message"] == never.json()["message"].replace("never", "bp"), r.text
        # naming team-a outright: 403
        r = c.request(method, path + "?namespace=team-a", json=body, headers=b)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    assert api_factory.started == []  # no worker was started for team-b's attempts
    # team-a's function is intact and answers its own key through the same routes
    assert c.get(URL, headers=a).json()["env_vars"] == {"WHO": "a"}
    out = c.post(URL + "/invoke", json={"job_id": 2, "args": "hi"}, headers=a)
    assert out.status_code == 200 and out.json()["job_id"] == 2 and out.json()["result"] == "echo:hi", (
        out.text
    )
    assert [w.config.env.get("WHO") for w in api_factory.started] == ["a"]
    assert c.get(URL + "/health", headers=a).status_code == 200
    assert c.post(URL + "/warm", headers=a).status_code == 200

    # the same name in team-b is team-b's own function; deleting it leaves team-a's
    assert c.post("/api/v1/functions", json={**BP, "env": {"WHO": "b"}}, headers=b).status_code == 201
    got = c.get(URL, headers=b).json()
    assert got["namespace"] == "team-b" and got["env_vars"] == {"WHO": "b"}
    assert c.post(URL + "/invoke", json={"args": "x"}, headers=b).status_code == 200
    assert sorted(w.config.env.get("WHO") for w in api_factory.started) == ["a", "b"]
    assert c.delete(URL, headers=b).status_code == 204
    _absent(c.get(URL, headers=b))
    assert c.get(URL, headers=a).json()["namespace"] == "team-a"
    # an unbound key reaches each through ?namespace=
    assert c.get(URL + "?namespace=team-a", headers=k["admin"]).json()["env_vars"] == {"WHO": "a"}
    _absent(c.get(URL, headers=k["admin"]))  # the default namespace has none
    assert c.delete(URL, headers=a).status_code == 204
    _absent(c.get(URL + "?namespace=team-a", headers=k["admin"]))
