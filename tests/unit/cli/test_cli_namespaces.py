"""``faas namespace``, ``faas keys create --namespace``, ``faas -n`` and the SDK's ``namespace=`` against the
real app (SQLite, fake workers), through a transport that hands each request to the app."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from faasd.api.app import create_app
from faasd.cli import _context
from faasd.cli.main import app
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions
from faasd.sdk import Client, Forbidden, NotFound, QuotaExceeded

pytestmark = pytest.mark.unit


def _fakes():  # type: ignore[no-untyped-def]
    if "platform_fakes" in sys.modules:
        return sys.modules["platform_fakes"]
    spec = importlib.util.spec_from_file_location(
        "platform_fakes", Path(__file__).parents[1] / "platform" / "platform_fakes.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["platform_fakes"] = mod
    spec.loader.exec_module(mod)
    return mod


class Daemon:
    def __init__(self, tc: TestClient, admin: str) -> None:
        self.tc = tc
        self.admin = admin

    def handle(self, request: httpx.Request) -> httpx.Response:
        r = self.tc.request(
            request.method,
            str(request.url.copy_with(scheme="http", netloc=b"testserver")),
            content=request.read(),
            headers=dict(request.headers),
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)

    def client(self, key: str, namespace: str | None = None) -> Client:
        return Client(
            "http://faasd.test", api_key=key, namespace=namespace, transport=httpx.MockTransport(self.handle)
        )


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    s = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "c", auth=True)
    s.data_dir.mkdir(parents=True)
    p = Platform(s, _fakes().FakeFactory(), options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), raise_server_exceptions=False) as tc:
        d = Daemon(tc, token)
        monkeypatch.setattr(
            _context, "client_factory", lambda st: d.client(st.api_key or token, st.namespace)
        )
        monkeypatch.delenv("FAAS_NAMESPACE", raising=False)
        yield d


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_namespaces_and_namespaced_keys(daemon: Daemon) -> None:
    code, stdout, err = run("namespace", "create", "team-a", "--max-sandboxes", "1", "--max-snapshots", "3")
    assert code == 0, err
    assert stdout.strip() == "team-a"
    code, stdout, _ = run("namespace", "ls")
    assert code == 0 and "team-a" in stdout and "0/1" in stdout and "openfaas-fn" in stdout
    code, stdout, _ = run(
        "namespace", "set", "team-a", "--max-sandboxes", "2", "--unlimited", "max_snapshots"
    )
    assert code == 0
    code, stdout, _ = run("namespace", "get", "team-a")
    assert json.loads(stdout)["quotas"] == {
        "max_sandboxes": 2,
        "max_memory_mb": None,
        "max_disk_mb": None,
        "max_snapshots": None,
    }
    code, stdout, err = run(
        "keys", "create", "tenant", "--scope", "deploy", "--namespace", "team-a", "--json"
    )
    assert code == 0, err
    key = json.loads(stdout)
    assert key["namespace"] == "team-a"
    code, stdout, _ = run("keys", "ls")
    assert "team-a" in stdout
    # the tenant's key deploys into team-a without naming it; faas -n team-a shows it to the admin
    tenant = daemon.client(key["key"])
    assert tenant.deploy("hello", image="faasd/python:latest").namespace == "team-a"
    code, stdout, _ = run("-n", "team-a", "ls")
    assert code == 0 and "hello" in stdout
    code, stdout, _ = run("ls")  # the admin without -n: every namespace
    assert "hello" in stdout
    code, _, err = run("namespace", "rm", "team-a")
    assert code == 1 and "not empty" in err
    code, _, err = run("--api-key", key["key"], "namespace", "create", "mine")
    assert code == 1 and "admin" in err


def test_sdk_namespace_option_and_errors(daemon: Daemon) -> None:
    admin = daemon.client(daemon.admin)
    admin.create_namespace("team-a", max_sandboxes=0)
    admin.create_namespace("team-b")
    a = daemon.client(admin.create_api_key("a", ["deploy"], namespace="team-a").key)
    b = daemon.client(admin.create_api_key("b", ["deploy"], namespace="team-b").key)
    a.deploy("only-a", image="faasd/python:latest")
    with pytest.raises(NotFound):
        b.get_function("only-a")
    with pytest.raises(NotFound):
        b.invoke("only-a", b"x")
    with pytest.raises(Forbidden):
        daemon.client(b.api_key or "", namespace="team-a").list_functions()
    with pytest.raises(QuotaExceeded) as e:
        a.invoke("only-a", b"x")
    assert e.value.details["quota"] == "max_sandboxes"
    in_a = daemon.client(daemon.admin, namespace="team-a")
    assert [f.name for f in in_a.list_functions()] == ["only-a"]
    assert [n.name for n in a.list_namespaces()] == ["team-a"]
    assert admin.get_namespace("team-a").usage.sandboxes == 0
