"""Hand-written hostile input against a real daemon: malformed JSON, wrong types, oversized bodies,
unknown ids, path traversal in names. Always a JSON error with a 4xx status, never a 5xx, never a file
outside data_dir."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest

pytestmark = [pytest.mark.integration]


@pytest.fixture
def client(fuzz_daemon) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=fuzz_daemon.url, timeout=60) as c:
        yield c


def json_error(r: httpx.Response, *statuses: int) -> dict[str, object]:
    assert r.status_code in statuses, (r.request.method, r.request.url, r.status_code, r.text[:1000])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body.get("message"), body
    return body


JSON_ROUTES = [
    ("POST", "/api/v1/functions"),
    ("PUT", "/api/v1/functions/echo"),
    ("POST", "/api/v1/secrets"),
    ("PUT", "/api/v1/secrets/x"),
    ("POST", "/api/v1/keys"),
    ("POST", "/api/v1/functions/echo/scale"),
    ("POST", "/api/v1/execute"),
    ("POST", "/system/functions"),
    ("PUT", "/system/functions"),
    ("POST", "/system/secrets"),
    ("POST", "/system/scale-function/echo"),
]

MALFORMED = [
    b"{",
    b'{"name": "x",}',
    b"\xff\xfe\x00garbage",
    b"[1, 2",
    b'{"name": "\\ud800"}',
    b"nul\x00l",
    b"1e999999",
    b'{"a":' * 50 + b"1" + b"}" * 50,
]
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000  # 30 KB, below the payload limit



@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_malformed_json_is_a_4xx_json_error(client: httpx.Client, method: str, path: str) -> None:
    bad = []
    for body in MALFORMED:
        r = client.request(method, path, content=body, headers={"content-type": "application/json"})
        if r.status_code not in (400, 422) or not r.headers["content-type"].startswith("application/json"):
            bad.append((body[:40], r.status_code, r.text[:300]))
    assert not bad, bad


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_deeply_nested_json_is_a_4xx(client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, path, content=DEEP, headers={"content-type": "application/json"})
    json_error(r, 400, 413, 422)


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_wrong_types_are_422_or_400(client: httpx.Client, method: str, path: str) -> None:
    for body in (
        [],
        "str",
        42,
        None,
        True,
        {
            "name": 123,
            "image": [],
            "value": {},
            "replicas": "many",
            "scopes": "admin",
            "service": None,
            "min": -1,
        },
    ):
        r = client.request(
            method, path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        json_error(r, 400, 404, 422)


def test_execute_with_missing_command_is_a_4xx(client: httpx.Client) -> None:
    r = client.post("/api/v1/execute", json={"image": "faasd/python:latest", "command": ["no-such-binary"]})
    json_error(r, 400, 404, 422)


def test_execute_with_hostile_working_dir_never_escapes(client: httpx.Client) -> None:
    """CVE-2024-21626 shape: working_dir=/proc/self/fd/N must not land in a host directory."""
    for wd in ("/proc/self/fd/5", "/proc/self/fd/7", "/proc/self/fd/8", "../../../../", "/proc/1/root/.."):
        r = client.post(
            "/api/v1/execute",
            json={
                "image": "faasd/python:latest",
                "working_dir": wd,
                "command": ["sh", "-c", "pwd; cat /proc/self/mountinfo"],
            },
        )
        if r.status_code == 200:
            stdout = r.json()["stdout"]
            cwd = stdout.splitlines()[0]
            assert not cwd.startswith(("/sys", "/proc")) and "unreachable" not in cwd, (wd, stdout[:500])
        else:  # refused (4xx, or the runtime failure below): the process never ran
            assert r.json()["error"] in ("invalid_input", "validation_error", "runtime_failure"), r.text


def test_execute_with_fd_working_dir_is_a_4xx(client: httpx.Client) -> None:
    r = client.post(
        "/api/v1/execute",
        json={"image": "faasd/python:latest", "working_dir": "/proc/self/fd/7", "command": ["true"]},
    )
    json_error(r, 400, 422)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/instances", {"image": "faasd/python:latest", "env": {"": "x"}}),
        ("/api/v1/instances", {"image": "faasd/python:latest", "env": {"A=B": "x"}}),
        ("/api/v1/execute", {"image": "faasd/python:latest", "command": ["true"], "env_vars": {"": "x"}}),
        ("/api/v1/execute", {"image": "faasd/python:latest", "command": ["true"], "env_vars": {"A=B": "x"}}),
    ],
)
def test_invalid_env_names_are_a_4xx(client: httpx.Client, path: str, body: dict[str, object]) -> None:
    r = client.post(path, json=body)
    if r.status_code < 300 and path.endswith("instances"):
        client.delete(f"{path}/{r.json()['id']}")
    json_error(r, 400, 422)


def test_wrong_query_types(client: httpx.Client) -> None:
    for path in (
        "/api/v1/functions/echo/logs?tail=abc",
        "/api/v1/functions/echo/logs?tail=-5",
        "/api/v1/executions?limit=0",
        "/api/v1/executions?limit=1e9",
        "/api/v1/functions/echo/logs?since=yesterday",
    ):
        json_error(client.get(path), 400, 422)


@pytest.mark.parametrize(
    "path", ["/api/v1/functions/echo/invoke", "/function/echo", "/api/v1/secrets", "/api/v1/functions"]
)
def test_oversized_payload_is_413(client: httpx.Client, fuzz_daemon, path: str) -> None:  # type: ignore[no-untyped-def]
    limit = fuzz_daemon.settings.max_payload_bytes
    big = b"x" * (limit + 1)
    body = json_error(client.post(path, content=big), 413)
    assert body["error"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # chunked: no content-length to reject up front
        for _ in range(limit // 4096 + 2):
            yield b"y" * 4096

    json_error(client.post(path, content=chunks()), 413)


def test_payload_at_the_limit_is_accepted(client: httpx.Client, fuzz_daemon) -> None:  # type: ignore[no-untyped-def]
    limit = fuzz_daemon.settings.max_payload_bytes
    r = client.post("/api/v1/functions/echo/invoke", content=b"z" * limit)
    assert r.status_code == 200, r.text[:500]
    assert len(r.content) == limit


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/functions/nope"),
        ("PUT", "/api/v1/functions/nope"),
        ("DELETE", "/api/v1/functions/nope"),
        ("POST", "/api/v1/functions/nope/invoke"),
        ("POST", "/api/v1/functions/nope/invoke-async"),
        ("GET", "/api/v1/functions/nope/logs"),
        ("POST", "/api/v1/functions/nope/scale"),
        ("GET", "/api/v1/executions/ex_doesnotexist"),
        ("GET", "/api/v1/executions/ex_doesnotexist/logs"),
        ("PUT", "/api/v1/secrets/nope"),
        ("DELETE", "/api/v1/secrets/nope"),
        ("DELETE", "/api/v1/keys/nope"),
        ("GET", "/system/function/nope"),
        ("POST", "/function/nope"),
        ("GET", "/no/such/route"),
    ],
)
def test_unknown_ids_are_404_json(client: httpx.Client, method: str, path: str) -> None:
    payload = {
        "PUT /api/v1/functions/nope": {"name": "nope", "image": "faasd/python:latest"},
        "POST /api/v1/functions/nope/scale": {"replicas": 1},
        "PUT /api/v1/secrets/nope": {"value": "v"},
    }.get(f"{method} {path}")
    r = client.request(method, path, json=payload) if payload is not None else client.request(method, path)
    body = json_error(r, 404)
    assert body["error"] == "not_found"


TRAVERSAL = [
    "..",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "a/../../b",
    "....//....//x",
    "..\\..\\x",
    "%00",
    "x%00y",
    "/etc/passwd",
    "~root",
]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_path_traversal_in_names(client: httpx.Client, fuzz_daemon, name: str) -> None:  # type: ignore[no-untyped-def]
    data_dir = fuzz_daemon.settings.data_dir
    before = set(os.listdir(data_dir.parent))
    for method, path in (
        ("GET", f"/api/v1/functions/{name}"),
        ("DELETE", f"/api/v1/secrets/{name}"),
        ("GET", f"/system/function/{name}"),
        ("POST", f"/function/{name}"),
    ):
        r = client.request(method, path)
        assert r.status_code < 500, (method, path, r.status_code, r.text[:500])
        assert "root:" not in r.text  # never the content of /etc/passwd
    for method, path, body in (
        ("POST", "/api/v1/functions", {"name": name, "image": "python:3"}),
        ("POST", "/api/v1/secrets", {"name": name, "value": "pwned"}),
        ("POST", "/system/secrets", {"name": name, "value": "pwned"}),
        ("POST", "/system/functions", {"service": name, "image": "python:3"}),
    ):
        r = client.request(method, path, json=body)
        json_error(r, 400, 404, 422)
    assert set(os.listdir(data_dir.parent)) == before  # nothing written next to data_dir
    assert not any("pwned" in p.name for p in data_dir.rglob("*"))


def test_bad_content_type_and_methods(client: httpx.Client) -> None:
    r = client.post(
        "/api/v1/secrets",
        content=b"name=x&value=y",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    json_error(r, 400, 415, 422)
    json_error(client.request("PATCH", "/api/v1/functions"), 405)
    json_error(client.request("TRACE", "/api/v1/functions/echo"), 405)


def test_hostile_headers_on_invoke(client: httpx.Client) -> None:
    for headers in (
        {"content-length": "abc"},
        {"x-callback-url": "file:///etc/passwd"},
        {"x-callback-url": "http://[::1"},
        {"content-type": "\x7f"},
    ):
        try:
            r = client.post("/api/v1/functions/echo/invoke?async=true", content=b"hi", headers=headers)
        except httpx.HTTPError:
            continue  # refused by the client or the HTTP server: not a 5xx from the app
        assert r.status_code < 500, (headers, r.status_code, r.text[:500])
