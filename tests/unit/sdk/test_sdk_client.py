"""Request shapes and response parsing of ``faasd.sdk.Client`` against an ``httpx.MockTransport``."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from faasd.sdk import (
    Client,
    Conflict,
    ExecutionWaitTimeout,
    FunctionError,
    NotFound,
    StreamOutput,
    StreamResult,
    StreamStart,
)

pytestmark = pytest.mark.unit

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport that answers with ``handler`` and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def client_for(handler: Handler, **kwargs: object) -> tuple[Client, Recorder]:
    rec = Recorder(handler)
    kwargs.setdefault("api_key", "fdk_test")
    return Client("http://faasd.test:9999", transport=rec.transport, **kwargs), rec  # type: ignore[arg-type]


FUNCTION = {
    "name": "hello",
    "image": "faasd/python:latest",
    "runtime": "python",
    "handler": "handler.handle",
    "env": {"A": "1"},
    "secrets": [],
    "limits": {"memory_mb": 128, "cpu_cores": 1.0, "pids": 256, "timeout_s": 30, "disk_mb": 1024},
    "scale": {"min": 0, "max": 4},
    "mode": "cached",
    "labels": {},
    "created_at": "2026-11-23T16:30:00Z",
    "updated_at": "2026-11-23T16:30:00Z",
    "status": {"replicas": 1, "busy": 0, "queued": 0, "min": 0, "max": 4},
}


def test_bearer_key_and_base_url() -> None:
    client, rec = client_for(lambda r: httpx.Response(200, json={"status": "ok", "version": "0.1.0"}))
    assert client.health().status == "ok"
    assert str(rec.last.url) == "http://faasd.test:9999/healthz"
    assert rec.last.headers["authorization"] == "Bearer fdk_test"
    assert rec.last.headers["user-agent"].startswith("faasd-sdk/")


def test_env_url_and_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAAS_URL", "127.0.0.1:8111/")
    monkeypatch.setenv("FAAS_API_KEY", "fdk_env\n")
    c = Client()
    assert c.base_url == "http://127.0.0.1:8111"
    assert c.headers["authorization"] == "Bearer fdk_env"
    monkeypatch.delenv("FAAS_API_KEY")
    monkeypatch.delenv("FAAS_API_KEY_FILE", raising=False)
    monkeypatch.setenv("FAASD_DATA_DIR", str(tmp_path))
    (tmp_path / "admin.key").write_text("fdk_datadir\n")
    assert Client().api_key == "fdk_datadir"
    key_file = tmp_path / "admin.key"
    key_file.write_text("fdk_file\n")
    assert Client(key_file=key_file).api_key == "fdk_file"
    assert Client(key_file=tmp_path / "missing").api_key is None
    assert "authorization" not in Client(key_file=tmp_path / "missing").headers


def test_deploy_flattens_options_into_the_spec() -> None:
    client, rec = client_for(lambda r: httpx.Response(201, json=FUNCTION))
    fn = client.deploy(
        "hello",
        "faasd/python:latest",
        handler="handler.handle",
        env={"A": "1"},
        memory_mb=128,
        min_replicas=0,
        max_replicas=4,
        mode="cached",
    )
    assert rec.last.method == "POST" and rec.last.url.path == "/api/v1/functions"
    assert json.loads(rec.last.content) == {
        "name": "hello",
        "image": "faasd/python:latest",
        "handler": "handler.handle",
        "env": {"A": "1"},
        "secrets": [],
        "limits": {"memory_mb": 128},
        "scale": {"min": 0, "max": 4},
        "mode": "cached",
        "labels": {},
        "annotations": {},
    }
    assert fn.name == "hello" and fn.limits is not None and fn.limits.memory_mb == 128
    assert fn.status is not None and fn.status.replicas == 1
    assert fn.created_at is not None and fn.created_at.year == 2026


def test_deploy_replace_falls_back_to_put_on_conflict() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "POST":
            return httpx.Response(409, json={"error": "conflict", "message": "function 'hello' exists"})
        return httpx.Response(200, json=FUNCTION)

    client, rec = client_for(handler)
    with pytest.raises(Conflict):
        client.deploy("hello", "faasd/python:latest")
    client.deploy("hello", "faasd/python:latest", replace=True)
    assert [(r.method, r.url.path) for r in rec.requests[-2:]] == [
        ("POST", "/api/v1/functions"),
        ("PUT", "/api/v1/functions/hello"),
    ]


def test_update_is_read_modify_write() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "GET":
            return httpx.Response(200, json=FUNCTION)
        return httpx.Response(200, json={**FUNCTION, **json.loads(r.content)})

    client, rec = client_for(handler)
    fn = client.update("hello", memory_mb=512, env={"B": "2"})
    sent = json.loads(rec.last.content)
    assert rec.last.method == "PUT"
    assert sent["limits"]["memory_mb"] == 512 and sent["limits"]["pids"] == 256
    assert sent["env"] == {"B": "2"} and sent["image"] == "faasd/python:latest"
    assert "status" not in sent and "created_at" not in sent
    assert fn.limits is not None and fn.limits.memory_mb == 512


def test_list_get_delete_scale_paths() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        routes: dict[tuple[str, str], httpx.Response] = {
            ("GET", "/api/v1/functions"): httpx.Response(200, json={"functions": [FUNCTION]}),
            ("GET", "/api/v1/functions/a%20b"): httpx.Response(200, json=FUNCTION),
            ("DELETE", "/api/v1/functions/hello"): httpx.Response(204),
            ("POST", "/api/v1/functions/hello/scale"): httpx.Response(
                200, json={"name": "hello", "min": 2, "max": 4, "replicas": 2}
            ),
        }
        return routes[(r.method, r.url.raw_path.decode())]

    client, rec = client_for(handler)
    assert [f.name for f in client.list_functions()] == ["hello"]
    client.get_function("a b")
    assert client.delete_function("hello") is None
    result = client.scale("hello", 2)
    assert json.loads(rec.last.content) == {"replicas": 2}
    assert result.replicas == 2
    client.scale("hello", min=1, max=3)
    assert json.loads(rec.last.content) == {"min": 1, "max": 3}
    with pytest.raises(ValueError):
        client.scale("hello")


def test_invoke_sync_returns_function_response_and_platform_headers() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        assert r.headers["content-type"] == "application/json"
        assert json.loads(r.content) == {"name": "ada"}
        assert r.url.params["x"] == "1"
        return httpx.Response(
            200,
            content=b"hello ada",
            headers={
                "content-type": "text/plain",
                "x-execution-id": "ex_1",
                "x-cold-start": "true",
                "x-duration-ms": "12.5",
            },
        )

    client, rec = client_for(handler)
    result = client.invoke("hello", {"name": "ada"}, query={"x": "1"})
    assert rec.last.url.path == "/api/v1/functions/hello/invoke"
    assert result.ok and result.text == "hello ada"
    assert result.execution_id == "ex_1" and result.cold_start is True and result.duration_ms == 12.5


def test_invoke_body_encodings() -> None:
    client, rec = client_for(lambda r: httpx.Response(200, headers={"x-execution-id": "ex"}))
    client.invoke("f", b"\x00\x01")
    assert rec.last.headers["content-type"] == "application/octet-stream" and rec.last.content == b"\x00\x01"
    client.invoke("f", "text")
    assert rec.last.headers["content-type"].startswith("text/plain") and rec.last.content == b"text"
    client.invoke("f", "a,b", content_type="text/csv", headers={"X-Trace": "t1"})
    assert rec.last.headers["content-type"] == "text/csv" and rec.last.headers["x-trace"] == "t1"
    client.invoke("f")
    assert rec.last.content == b""


def test_invoke_function_failure_is_a_result_not_an_exception() -> None:
    body = {
        "error": "function_error",
        "message": "ZeroDivisionError: division by zero",
        "details": {"execution_id": "ex_2", "traceback": "Traceback ..."},
    }
    client, _ = client_for(lambda r: httpx.Response(500, json=body, headers={"x-execution-id": "ex_2"}))
    result = client.invoke("hello")
    assert not result.ok and result.status_code == 500
    assert result.error is not None and result.error["error"] == "function_error"
    with pytest.raises(FunctionError, match="division by zero") as info:
        result.raise_for_status()
    assert info.value.execution_id == "ex_2" and info.value.details["traceback"] == "Traceback ..."


def test_invoke_platform_errors_raise() -> None:
    client, _ = client_for(
        lambda r: httpx.Response(
            404, json={"error": "not_found", "message": "function 'nope' does not exist; deploy it first"}
        )
    )
    with pytest.raises(NotFound, match="deploy it first"):
        client.invoke("nope")


def test_invoke_async_and_wait_polls_until_done(monkeypatch: pytest.MonkeyPatch) -> None:
    statuses = iter(["queued", "running", "succeeded"])
    sleeps: list[float] = []
    monkeypatch.setattr("faasd.sdk.client.time.sleep", sleeps.append)

    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "POST":
            assert r.url.path == "/api/v1/functions/hello/invoke-async"
            assert r.headers["x-callback-url"] == "http://127.0.0.1:1/cb"
            return httpx.Response(
                202,
                json={"execution_id": "ex_9", "status": "queued", "status_url": "/api/v1/executions/ex_9"},
            )
        assert r.url.path == "/api/v1/executions/ex_9"
        status = next(statuses)
        return httpx.Response(
            200,
            json={
                "id": "ex_9",
                "function": "hello",
                "status": status,
                "http_status": 200 if status == "succeeded" else None,
                "result": base64.b64encode(b"\xffok").decode(),
                "result_encoding": "base64",
            },
        )

    client, _ = client_for(handler)
    handle = client.invoke_async("hello", "x", callback_url="http://127.0.0.1:1/cb")
    assert handle.id == "ex_9" and handle.status_url == "/api/v1/executions/ex_9"
    execution = handle.wait(timeout=10)
    assert execution.succeeded and execution.body == b"\xffok"
    assert sleeps == [0.05, 0.1]


def test_wait_timeout_raises_with_the_last_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("faasd.sdk.client.time.sleep", lambda s: None)
    client, _ = client_for(lambda r: httpx.Response(200, json={"id": "ex_1", "status": "running"}))
    with pytest.raises(ExecutionWaitTimeout, match="still running"):
        client.execution("ex_1").wait(timeout=0)


def test_invoke_stream_yields_typed_events() -> None:
    sse = (
        ": keep-alive\n\n"
        'event: start\ndata: {"execution_id": "ex_5", "cold_start": false}\n\n'
        "event: stdout\ndata: line one\ndata: line two\n\n"
        "event: stderr\ndata: warn\n\n"
        'event: result\ndata: {"execution_id": "ex_5", "status": "succeeded", "http_status": 200, '
        '"headers": {"content-type": "text/plain"}, "body": "done", "body_encoding": "utf-8", '
        '"duration_ms": 3.5}\n\n'
    )
    client, rec = client_for(
        lambda r: httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})
    )
    events = list(client.invoke_stream("hello", {"n": 1}))
    assert rec.last.url.path == "/api/v1/functions/hello/invoke-stream"
    assert rec.last.headers["accept"] == "text/event-stream"
    assert events[0] == StreamStart(execution_id="ex_5", cold_start=False)
    assert events[1] == StreamOutput(stream="stdout", text="line one\nline two")
    assert events[2] == StreamOutput(stream="stderr", text="warn")
    assert isinstance(events[3], StreamResult)
    assert events[3].ok and events[3].text == "done" and events[3].duration_ms == 3.5
    assert len(events) == 4


def test_execute_one_off_request_shape() -> None:
    result_body = {
        "request_id": "rq_1",
        "exit_code": 0,
        "stdout": "hi\n",
        "stderr": "",
        "duration_ms": 80.0,
        "timed_out": False,
        "oom_killed": False,
    }
    client, rec = client_for(lambda r: httpx.Response(200, json=result_body))
    result = client.execute(code="print('hi')", language="python", env_vars={"A": "1"}, timeout_ms=5000)
    assert rec.last.url.path == "/api/v1/execute"
    assert json.loads(rec.last.content) == {
        "code": "print('hi')",
        "language": "python",
        "env_vars": {"A": "1"},
        "timeout_ms": 5000,
    }
    assert result.ok and result.stdout == "hi\n"
    client.execute(["sh", "-c", "echo 1"], image="faasd/python:latest", working_dir="/tmp")
    assert json.loads(rec.last.content) == {
        "command": ["sh", "-c", "echo 1"],
        "image": "faasd/python:latest",
        "working_dir": "/tmp",
    }
    with pytest.raises(ValueError):
        client.execute(["true"], code="x", language="python")
    with pytest.raises(ValueError):
        client.execute(code="x")
    sent = len(rec.requests)
    with pytest.raises(ValueError, match=r"Expected `int \| null`, got `str` - at `\$.timeout_ms`"):
        client.execute(["true"], timeout_ms="soon")  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="unknown execute option"):
        client.execute(["true"], timeout=5)  # type: ignore[typeddict-unknown-key]
    assert len(rec.requests) == sent  # refused before anything was sent


def test_secrets_and_keys() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        path = r.url.path
        if path == "/api/v1/secrets" and r.method == "GET":
            return httpx.Response(200, json={"secrets": [{"name": "db"}]})
        if path == "/api/v1/secrets":
            return httpx.Response(201, json={"name": json.loads(r.content)["name"]})
        if path.startswith("/api/v1/secrets/") and r.method == "PUT":
            return httpx.Response(200, json={"name": "db"})
        if path == "/api/v1/keys" and r.method == "GET":
            return httpx.Response(200, json={"keys": [{"id": "k1", "name": "ci", "scopes": ["deploy"]}]})
        if path == "/api/v1/keys":
            return httpx.Response(201, json={"id": "k2", "name": "ci", "scopes": ["invoke"], "key": "fdk_x"})
        return httpx.Response(204)

    client, rec = client_for(handler)
    assert client.create_secret("db", "s3cret").name == "db"
    assert json.loads(rec.last.content) == {"name": "db", "value": "s3cret"}
    client.update_secret("db", "new")
    assert json.loads(rec.last.content) == {"value": "new"}
    assert [s.name for s in client.list_secrets()] == ["db"]
    client.delete_secret("db")
    assert (rec.last.method, rec.last.url.path) == ("DELETE", "/api/v1/secrets/db")
    created = client.create_api_key("ci", rate_limit_rps=5)
    assert json.loads(rec.last.content) == {"name": "ci", "scopes": ["invoke"], "rate_limit_rps": 5}
    assert created.key == "fdk_x"
    assert client.list_api_keys()[0].scopes == ["deploy"]
    client.delete_api_key("k1")
    assert (rec.last.method, rec.last.url.path) == ("DELETE", "/api/v1/keys/k1")


def test_executions_and_logs() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/api/v1/executions":
            return httpx.Response(200, json={"executions": [{"id": "ex_1", "status": "failed"}]})
        if r.url.path.endswith("/logs") and r.url.path.startswith("/api/v1/executions/"):
            return httpx.Response(200, json={"execution_id": "ex_1", "stdout": "o", "stderr": "e"})
        if r.url.path == "/api/v1/functions/hello/logs":
            return httpx.Response(
                200,
                json={
                    "lines": [
                        {
                            "function": "hello",
                            "execution_id": "ex_1",
                            "stream": "stdout",
                            "text": "hi",
                            "timestamp": "2026-11-23T16:30:00Z",
                        }
                    ]
                },
            )
        return httpx.Response(200, text="# HELP x\nx 1\n")

    client, rec = client_for(handler)
    assert client.list_executions(function="hello", limit=5)[0].status == "failed"
    assert dict(rec.last.url.params) == {"function": "hello", "limit": "5"}
    assert client.execution_logs("ex_1").stderr == "e"
    lines = client.function_logs("hello", tail=10)
    assert rec.last.url.params["tail"] == "10" and lines[0].text == "hi" and lines[0].stream == "stdout"
    assert "x 1" in client.metrics()


def test_follow_logs_parses_ndjson_stream() -> None:
    ndjson = (
        '{"name": "hello", "namespace": "openfaas-fn", "instance": "fd-1", "timestamp": '
        '"2026-11-23T16:30:00Z", "text": "first"}\n'
        "\n"
        '{"name": "hello", "namespace": "openfaas-fn", "instance": "fd-1", "timestamp": '
        '"2026-11-23T16:30:01Z", "text": "second"}\n'
    )
    client, rec = client_for(
        lambda r: httpx.Response(
            200, content=ndjson.encode(), headers={"content-type": "application/x-ndjson"}
        )
    )
    lines = list(client.logs("hello", tail=5))
    assert rec.last.url.path == "/system/logs"
    assert dict(rec.last.url.params) == {"name": "hello", "follow": "true", "tail": "5"}
    assert [(line.function, line.text, line.instance) for line in lines] == [
        ("hello", "first", "fd-1"),
        ("hello", "second", "fd-1"),
    ]


def test_no_automatic_retries() -> None:
    client, rec = client_for(
        lambda r: httpx.Response(
            429, json={"error": "capacity_exhausted", "message": "pool full"}, headers={"retry-after": "2"}
        )
    )
    with pytest.raises(Exception, match="pool full"):
        client.invoke("hello")
    assert len(rec.requests) == 1


def test_a_plain_http_client_loads_no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading certifi's CA bundle took ~90 ms of every ``faas`` command; a client of an ``http`` daemon
    never opens a TLS connection, so it does not load it. An ``https`` daemon is still verified."""
    import ssl

    from faasd.sdk import AsyncClient

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CA bundle was loaded")

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", refuse)
    for cls in (Client, AsyncClient):
        c = cls("http://127.0.0.1:8080", api_key="k")
        assert c.verify is False
        with pytest.raises(AssertionError, match="CA bundle"):
            cls("https://faasd.example:8443", api_key="k")
