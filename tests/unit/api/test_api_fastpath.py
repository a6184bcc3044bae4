"""The invoke fast path (``faasd.api.fastpath``): it serves sync invokes, and every answer (success,
errors, auth, metrics, records, access log) is the one the FastAPI routes give for the same request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from faasd.api import fastpath
from faasd.api.accesslog import AccessLog
from faasd.api.app import create_app
from faasd.api.logging import JsonFormatter
from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions

pytestmark = pytest.mark.unit

DEPLOY = {"name": "fp-fn", "image": "faasd/python:latest", "runtime": "exec", "command": ["cat"]}
VOLATILE = {"x-execution-id", "x-call-id", "x-duration-ms", "x-cold-start", "date", "server"}


def _platform(tmp_path: Path, factory: object, **settings: Any) -> tuple[Settings, Platform]:
    s = Settings(
        data_dir=tmp_path / "data", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", **settings
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return s, Platform(s, factory, options=PlatformOptions(poll_interval_s=0.05))  # type: ignore[arg-type]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Routes the fast path served (it counts a request just before answering it)."""
    seen: list[str] = []
    real = fastpath.InvokeFastPath._respond

    async def spy(self: fastpath.InvokeFastPath, *args: Any, **kw: Any) -> None:
        seen.append(args[3].route)
        await real(self, *args, **kw)

    monkeypatch.setattr(fastpath.InvokeFastPath, "_respond", spy)
    return seen


@pytest.fixture
def auth_app(tmp_path: Path, api_factory: object) -> Iterator[tuple[TestClient, Platform, str]]:
    s, p = _platform(tmp_path, api_factory, auth=True)
    token = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    assert token is not None
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        h = {"Authorization": f"Bearer {token}"}
        assert c.post("/api/v1/functions", json=DEPLOY, headers=h).status_code in (200, 201)
        yield c, p, token


def _comparable(r: Any) -> tuple[int, bytes, dict[str, str]]:
    body = r.content
    if r.headers.get("content-type") == "application/json":
        doc = r.json()
        if isinstance(doc.get("details"), dict):
            doc["details"].pop("execution_id", None)
        body = json.dumps(doc, sort_keys=True).encode()
    headers = {k: v for k, v in r.headers.items() if k not in VOLATILE}
    headers.pop("content-length", None)
    return r.status_code, body, headers


def _counts(p: Platform) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for metric in p.metrics.http_requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                lb = sample.labels
                out[(lb["method"], lb["route"], lb["status"])] = sample.value
    return out


def test_match_routes() -> None:
    m = fastpath.match("POST", "/function/f", b"")
    assert m is not None and (m.name, m.path, m.route, m.openfaas) == ("f", "/", "/function/{name}", True)
    m = fastpath.match("GET", "/function/f.openfaas-fn/a/b", b"q=1")
    assert m is not None and (m.name, m.path) == ("f.openfaas-fn", "/a/b")
    assert m.route == "/function/{name}/{path:path}"
    m = fastpath.match("POST", "/function/f/", b"")
    assert m is not None and m.path == "/" and m.route == "/function/{name}/{path:path}"
    m = fastpath.match("POST", "/api/v1/functions/f/invoke", b"")
    assert m is not None and (m.name, m.route, m.openfaas) == ("f", "/api/v1/functions/{name}/invoke", False)
    # the app's: other methods, other namespaces, ?async / callback_url, other routes
    assert fastpath.match("HEAD", "/function/f", b"") is None
    assert fastpath.match("OPTIONS", "/function/f", b"") is None
    assert fastpath.match("POST", "/function/", b"") is None
    assert fastpath.match("POST", "/api/v1/functions/f/invoke", b"async=true") is None
    assert fastpath.match("GET", "/api/v1/functions/f/invoke", b"") is None
    assert fastpath.match("POST", "/api/v1/functions/f/invoke-stream", b"") is None
    assert fastpath.match("POST", "/api/v1/functions/a/b/invoke", b"") is None
    assert fastpath.match("POST", "/async-function/f", b"") is None


def test_same_answers_as_the_routes(
    auth_app: tuple[TestClient, Platform, str], served: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, p, token = auth_app
    h = {"Authorization": f"Bearer {token}"}
    deployer = p.keys.create("deployer", ["deploy"])[1]  # deploy implies invoke
    requests: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/api/v1/functions/fp-fn/invoke", h, b"hello"),
        ("POST", "/api/v1/functions/fp-fn/invoke", {}, b"no key"),
        ("POST", "/api/v1/functions/fp-fn/invoke", {"Authorization": "Bearer fdk_wrong"}, b"x"),
        ("POST", "/api/v1/functions/fp-fn/invoke", {"Authorization": "Digest x"}, b"x"),
        ("POST", "/api/v1/functions/fp-fn/invoke", {"Authorization": f"Bearer {deployer}"}, b"x"),
        ("POST", "/api/v1/functions/nope/invoke", h, b"x"),
        ("POST", "/function/fp-fn", {}, b"open"),
        ("PUT", "/function/fp-fn/sub/path?a=1&b=2", {"Authorization": "Bearer the-functions-own"}, b"p"),
        ("DELETE", "/function/fp-fn.openfaas-fn/", {}, b""),
        ("POST", "/function/nope", {}, b"x"),
        ("POST", "/function/fp-fn.other-ns", {}, b"x"),
        ("POST", "/function/fp-fn", {}, b"raise"),
        ("POST", "/api/v1/functions/fp-fn/invoke", h, b"raise"),
    ]
    fast = []
    for method, url, headers, body in requests:
        fast.append(_comparable(c.request(method, url, headers=headers, content=body)))
    n_fast = len(served)
    counts_fast = _counts(p)

    monkeypatch.setattr(fastpath, "match", lambda *_a: None)  # everything through the FastAPI routes
    slow = []
    for method, url, headers, body in requests:
        slow.append(_comparable(c.request(method, url, headers=headers, content=body)))
    assert len(served) == n_fast
    assert fast == slow
    # every request above went through the fast path the first time, except the one without a key
    # (the app owns "authentication required" and console cookies)
    assert n_fast == len(requests) - 1
    assert [s for s, _b, _h in fast] == [200, 401, 401, 401, 200, 404, 200, 200, 200, 404, 404, 500, 500]
    assert fast[0][1] == b"echo:hello"
    # faasd_http_requests_total: the fast path counted with the routes' labels, the app then counted the same
    counts_both = _counts(p)
    for k, v in counts_fast.items():
        if k[1] in (fastpath.ROUTE_INVOKE, fastpath.ROUTE_FUNCTION, fastpath.ROUTE_FUNCTION_PATH):
            assert counts_both[k] == 2 * v, k
    assert counts_fast[("POST", fastpath.ROUTE_INVOKE, "200")] == 2  # admin and deployer
    assert counts_fast[("PUT", fastpath.ROUTE_FUNCTION_PATH, "200")] == 1


def test_records_and_invocation_metrics(
    auth_app: tuple[TestClient, Platform, str], served: list[str]
) -> None:
    c, p, token = auth_app
    h = {"Authorization": f"Bearer {token}"}
    r = c.post("/function/fp-fn/x/y?k=v", content=b"rec", headers={"X-Custom": "1"})
    assert r.status_code == 200 and served == [fastpath.ROUTE_FUNCTION_PATH]
    ex_id = r.headers["x-call-id"]
    assert r.headers["x-execution-id"] == ex_id
    assert c.get(f"/api/v1/executions/{ex_id}", headers=h).json()["status"] == "succeeded"
    row = p.executions.get(ex_id)
    assert (row.kind, row.function, row.request_method, row.request_path) == ("sync", "fp-fn", "POST", "/x/y")
    assert row.request_query == "k=v" and row.request_body == b"rec" and row.result_body == b"echo:rec"
    assert row.request_headers["x-custom"] == "1"
    assert c.get("/api/v1/functions/fp-fn", headers=h).json()["invocation_count"] == 1
    text = c.get("/metrics", headers=h).text
    assert 'faasd_invocations_total{function="fp-fn",status="succeeded"} 1.0' in text


def test_limits_and_rate_limits(tmp_path: Path, api_factory: object, served: list[str]) -> None:
    s, p = _platform(tmp_path, api_factory, auth=True, max_payload_bytes=300)
    admin = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        h = {"Authorization": f"Bearer {admin}"}
        assert c.post("/api/v1/functions", json=DEPLOY, headers=h).status_code in (200, 201)
        r = c.post("/api/v1/functions/fp-fn/invoke", content=b"x" * 301, headers=h)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large" and served == []
        _row, slow_key = p.keys.create("slow", ["invoke"], rate_limit_rps=0.01, burst=1)
        k = {"Authorization": f"Bearer {slow_key}"}
        assert c.post("/api/v1/functions/fp-fn/invoke", content=b"1", headers=k).status_code == 200
        r = c.post("/api/v1/functions/fp-fn/invoke", content=b"2", headers=k)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert served == [fastpath.ROUTE_INVOKE, fastpath.ROUTE_INVOKE]
        # ?async= is the app's: a 202 with the execution id
        r = c.post("/api/v1/functions/fp-fn/invoke?async=true", content=b"a", headers=h)
        assert r.status_code == 202 and len(served) == 2


def test_function_auth_setting(tmp_path: Path, api_factory: object, served: list[str]) -> None:
    s, p = _platform(tmp_path, api_factory, auth=True, function_auth=True)
    admin = p.keys.bootstrap_admin(s.data_dir / "admin.key")
    with TestClient(create_app(s, p), raise_server_exceptions=False) as c:
        h = {"Authorization": f"Bearer {admin}"}
        assert c.post("/api/v1/functions", json=DEPLOY, headers=h).status_code in (200, 201)
        assert c.post("/function/fp-fn", content=b"x").status_code == 401
        r = c.post("/function/fp-fn", content=b"x", headers={"Authorization": "Bearer the-functions-own"})
        assert r.status_code == 401
        assert c.post("/function/fp-fn", content=b"x", headers=h).content == b"echo:x"


def test_access_log_lines_match_the_json_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("faasd.test.access")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info(
            "%s %s %d", "POST", "/function/f", 200,
            extra={"http_method": "POST", "http_path": "/function/f", "http_route": "/function/{name}",
                   "http_status": 200, "duration_ms": 1.5, "key_id": None},
        )
        via_logging = json.loads(capsys.readouterr().err)
        batch = AccessLog(logger)  # outside an event loop each line is written at once
        batch.record(1.0, "POST", "/function/f", "/function/{name}", 200, 1.5, None)
        batch.record(2.0, "GET", "/function/g/x", "/function/{name}/{path:path}", 404, 0.25, "k1")
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
        assert len(lines) == 2
        via_logging.pop("ts")
        assert lines[0].pop("ts") == "1970-01-01T00:00:01Z"
        assert lines[0] == via_logging
        assert lines[1]["msg"] == "GET /function/g/x 404"
        assert (lines[1]["http_status"], lines[1]["key_id"]) == (404, "k1")
    finally:
        logger.handlers[:] = []
        logger.propagate = True


@settings(max_examples=300, deadline=None)
@given(
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    method=st.text(max_size=8),
    path=st.text(max_size=40),
    route=st.text(max_size=40),
    status=st.integers(min_value=100, max_value=599),
    ms=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 10**6)),
    key=st.one_of(st.none(), st.text(max_size=12)),
)
def test_access_log_template_writes_what_json_dumps_writes(
    at: float, method: str, path: str, route: str, status: int, ms: float, key: str | None
) -> None:
    """The templated line is the exact text of ``json.dumps`` of the formatter's fields (any strings,
    escapes, non-ASCII; floats that JSON writes oddly and ints go through ``json.dumps`` itself)."""
    from faasd.api.accesslog import _fields, json_line

    e = (at, method, path, route, status, ms, key)
    ts = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    msg = f"{method} {path} {status}"
    want: dict[str, object] = {"ts": ts, "level": "info", "logger": "faasd.access", "msg": msg}
    want.update(_fields(e))
    assert json_line("faasd.access", e) == json.dumps(want, ensure_ascii=False)


def test_unexpected_errors_are_json_500s(
    auth_app: tuple[TestClient, Platform, str], served: list[str], api_factory: Any
) -> None:
    c, _p, _token = auth_app

    def broken(_worker: object, _inv: object) -> None:
        raise RuntimeError("a bug")

    api_factory.behaviour = broken
    r = c.post("/function/fp-fn", content=b"x")
    assert r.status_code == 500 and served == [fastpath.ROUTE_FUNCTION]
    doc = r.json()
    assert doc["error"] == "internal_error" and doc["details"]["error_id"].startswith("err_")
