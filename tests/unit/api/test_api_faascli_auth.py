"""OpenFaaS invocation routes are open by default (as in the gateway); FAASD_FUNCTION_AUTH closes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions

pytestmark = pytest.mark.unit

DEPLOY = {"service": "open-fn", "image": "faasd/python:latest", "envProcess": "cat"}


def _client(tmp_path: Path, factory: object, function_auth: bool) -> Iterator[tuple[TestClient, str]]:
    s = Settings(
        data_dir=tmp_path / "data",
        run_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        auth=True,
        function_auth=function_auth,
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)
    p = Platform(s, factory, options=PlatformOptions(poll_interval_s=0.05))  # type: ignore[arg-type]
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        h = {"Authorization": f"Bearer {token}"}
        assert c.post("/system/functions", json=DEPLOY, headers=h).status_code == 202
        yield c, token


@pytest.fixture
def open_client(tmp_path: Path, api_factory: object) -> Iterator[tuple[TestClient, str]]:
    yield from _client(tmp_path, api_factory, function_auth=False)


@pytest.fixture
def guarded_client(tmp_path: Path, api_factory: object) -> Iterator[tuple[TestClient, str]]:
    yield from _client(tmp_path, api_factory, function_auth=True)


def test_function_routes_need_no_key_by_default(open_client: tuple[TestClient, str]) -> None:
    c, _token = open_client
    r = c.post("/function/open-fn", content=b"hi")
    assert r.status_code == 200 and r.content == b"echo:hi"
    assert c.post("/async-function/open-fn", content=b"later").status_code == 202
    # a function's own credentials pass through untouched, they are not checked against faasd's keys
    r = c.post("/function/open-fn", content=b"x", headers={"Authorization": "Bearer the-functions-own"})
    assert r.status_code == 200
    # the management API stays guarded
    assert c.get("/system/functions").status_code == 401
    assert c.post("/api/v1/functions/open-fn/invoke", content=b"x").status_code == 401


def test_function_auth_setting_requires_a_key(guarded_client: tuple[TestClient, str]) -> None:
    c, token = guarded_client
    assert c.post("/function/open-fn", content=b"hi").status_code == 401
    assert c.post("/async-function/open-fn", content=b"hi").status_code == 401
    assert (
        c.post("/function/open-fn", content=b"x", headers={"Authorization": "Bearer fdk_bad"}).status_code
        == 401
    )
    h = {"Authorization": f"Bearer {token}"}
    assert c.post("/function/open-fn", content=b"hi", headers=h).content == b"echo:hi"
    assert c.post("/async-function/open-fn/p", content=b"hi", headers=h).status_code == 202


def test_logs_tail_minus_one_means_all(open_client: tuple[TestClient, str]) -> None:
    c, token = open_client
    h = {"Authorization": f"Bearer {token}"}
    for i in range(3):
        assert c.post("/function/open-fn", content=f"n{i}".encode()).status_code == 200
    all_lines = c.get("/system/logs", params={"name": "open-fn", "follow": "false"}, headers=h).text
    r = c.get("/system/logs", params={"name": "open-fn", "tail": -1, "follow": "false"}, headers=h)
    assert r.status_code == 200 and r.text == all_lines and len(r.text.splitlines()) >= 3
    assert c.get("/system/logs", params={"name": "open-fn", "tail": -2}, headers=h).status_code == 422
