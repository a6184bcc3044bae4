"""The ``faas`` commands against a MockTransport-backed client (injected through the client factory)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from faasd.cli import _context
from faasd.cli.main import app
from faasd.sdk import Client
from fixtures.api_answers import FUNCTION

pytestmark = pytest.mark.unit

Handler = Callable[[httpx.Request], httpx.Response]


class Api:
    """Routes (method, path) to canned responses and records the requests the CLI sent."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[httpx.Request] = []
        self.states: list[_context.CliState] = []

    def on(self, method: str, path: str, handler: Handler | httpx.Response) -> None:
        self.routes[(method, path)] = handler if callable(handler) else (lambda r, resp=handler: resp)

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"error": "not_found", "message": f"no route {request.url.path}"})
        return route(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def factory(self, state: _context.CliState) -> Client:
        self.states.append(state)
        return Client(
            state.url or "http://faasd.test",
            api_key=state.api_key or "k",
            transport=httpx.MockTransport(self.handle),
        )


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    api = Api()
    monkeypatch.setattr(_context, "client_factory", api.factory)
    yield api


def run(*args: str, input: str | bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


FN = FUNCTION


def test_global_options_reach_the_client(api: Api) -> None:
    api.on("GET", "/healthz", httpx.Response(200, json={"status": "ok", "version": "0.1.0"}))
    code, _, err = run("--url", "http://other:1234", "--api-key", "fdk_x", "health")
    assert code == 0 and "ok" in err
    assert api.states[-1].url == "http://other:1234" and api.states[-1].api_key == "fdk_x"
    assert api.last.headers["authorization"] == "Bearer fdk_x"


def test_deploy_image_builds_the_spec_and_upserts(api: Api) -> None:
    api.on("POST", "/api/v1/functions", httpx.Response(409, json={"error": "conflict", "message": "exists"}))
    api.on(
        "PUT", "/api/v1/functions/hello", lambda r: httpx.Response(200, json={**FN, **json.loads(r.content)})
    )
    code, out, err = run(
        "deploy",
        "hello",
        "--image",
        "faasd/python:latest",
        "--handler",
        "main.handle",
        "-e",
        "A=1",
        "--env",
        "B=x=y",
        "--secret",
        "db",
        "--memory",
        "128",
        "--min",
        "1",
        "--max",
        "3",
        "--mode",
        "cached",
        "--network",
        "egress",
        "--json",
    )
    assert code == 0, err
    sent = json.loads(api.last.content)
    assert api.last.method == "PUT"
    assert sent["env"] == {"A": "1", "B": "x=y"} and sent["secrets"] == ["db"]
    assert sent["limits"] == {"memory_mb": 128} and sent["scale"] == {"min": 1, "max": 3}
    assert sent["handler"] == "main.handle" and sent["mode"] == "cached" and sent["network"] == "egress"
    assert json.loads(out)["name"] == "hello"


def test_deploy_create_only_reports_conflict_in_red_without_traceback(api: Api) -> None:
    api.on(
        "POST",
        "/api/v1/functions",
        httpx.Response(
            409, json={"error": "conflict", "message": "function 'hello' already exists; use PUT to update"}
        ),
    )
    code, out, err = run("deploy", "hello", "--image", "x", "--create-only")
    assert code == 1
    assert "error:" in err and "already exists" in err and "Traceback" not in err + out


def test_deploy_bad_env_is_a_usage_error(api: Api) -> None:
    code, _, err = run("deploy", "hello", "--image", "x", "--env", "NOEQUALS")
    assert code == 2 and "KEY=VALUE" in err
    assert api.requests == []


def test_deploy_source_dir_uploads_when_the_daemon_supports_it(api: Api, tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("def handle(req):\n    return 'hi'\n")
    api.on("GET", "/api/v1/info", httpx.Response(200, json={"version": "0.1.0", "source_deploy": True}))
    api.on("POST", "/api/v1/functions", httpx.Response(201, json=FN))
    code, _, err = run("deploy", "hello", str(tmp_path), "--runtime", "python")
    assert code == 0, err
    assert api.last.headers["content-type"].startswith("multipart/form-data")
    assert b'name="source"' in api.last.content and b'"image": "faasd/python:latest"' in api.last.content


def test_ls_table_and_json(api: Api) -> None:
    listed = {**FN, "namespace": "openfaas-fn"}
    api.on("GET", "/api/v1/functions", httpx.Response(200, json={"functions": [listed]}))
    code, out, _ = run("ls")
    assert code == 0
    header, row = out.strip().splitlines()[:2]
    assert header.split()[:5] == ["NAME", "NAMESPACE", "IMAGE", "RUNTIME", "MODE"]
    assert row.split()[:6] == ["hello", "openfaas-fn", "faasd/python:latest", "python", "cached", "1"]
    code, out, _ = run("ls", "--json")
    assert code == 0 and json.loads(out)[0]["name"] == "hello"


def test_ls_empty_says_how_to_deploy(api: Api) -> None:
    api.on("GET", "/api/v1/functions", httpx.Response(200, json={"functions": []}))
    code, out, err = run("ls")
    assert code == 0 and out == "" and "faas deploy" in err


def test_invoke_sync_writes_raw_body(api: Api, tmp_path: Path) -> None:
    api.on(
        "POST",
        "/api/v1/functions/hello/invoke",
        lambda r: httpx.Response(200, content=b"echo:" + r.content, headers={"x-execution-id": "ex_1"}),
    )
    payload = tmp_path / "in.json"
    payload.write_bytes(b'{"a": 1}')
    code, out, _ = run("invoke", "hello", "--data", f"@{payload}", "-t", "application/json")
    assert code == 0 and out == 'echo:{"a": 1}'
    assert api.last.headers["content-type"] == "application/json"
    code, out, _ = run("invoke", "hello", "--data", "-", input="from stdin")
    assert out == "echo:from stdin"
    code, out, _ = run("invoke", "hello", "-d", "x", "--json")
    assert json.loads(out) == {
        "execution_id": "ex_1",
        "status_code": 200,
        "cold_start": None,
        "duration_ms": None,
        "content_type": None,
        "body": "echo:x",
    }


def test_invoke_function_failure_exits_1_with_traceback_on_stderr(api: Api) -> None:
    api.on(
        "POST",
        "/api/v1/functions/hello/invoke",
        httpx.Response(
            500,
            json={
                "error": "function_error",
                "message": "ValueError: bad",
                "details": {"traceback": "Traceback (most recent call last):\n  ValueError: bad"},
            },
            headers={"x-execution-id": "ex_7"},
        ),
    )
    code, out, err = run("invoke", "hello")
    assert code == 1 and out == ""
    assert "ValueError: bad" in err and "ex_7" in err


def test_invoke_unknown_function(api: Api) -> None:
    code, _, err = run("invoke", "nope")
    assert code == 1 and "no route" in err


def test_invoke_async_prints_id_or_waits(api: Api) -> None:
    api.on(
        "POST",
        "/api/v1/functions/hello/invoke-async",
        httpx.Response(202, json={"execution_id": "ex_42", "status": "queued"}),
    )
    api.on(
        "GET",
        "/api/v1/executions/ex_42",
        httpx.Response(
            200, json={"id": "ex_42", "status": "succeeded", "result": "done", "result_encoding": "utf-8"}
        ),
    )
    code, out, _ = run("invoke", "hello", "--async")
    assert code == 0 and out == "ex_42\n"
    code, out, _ = run("invoke", "hello", "--async", "--wait")
    assert code == 0 and out == "done"


def test_invoke_stream_splits_stdout_and_stderr(api: Api) -> None:
    sse = (
        'event: start\ndata: {"execution_id": "ex_5", "cold_start": true}\n\n'
        "event: stdout\ndata: out line\n\nevent: stderr\ndata: err line\n\n"
        'event: result\ndata: {"execution_id": "ex_5", "status": "succeeded", "http_status": 200, '
        '"body": "final"}\n\n'
    )
    api.on(
        "POST",
        "/api/v1/functions/hello/invoke-stream",
        httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"}),
    )
    code, out, err = run("invoke", "hello", "--stream")
    assert code == 0
    assert out == "out line\nfinal" and "err line" in err and "ex_5" in err
    code, out, _ = run("invoke", "hello", "--stream", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["start", "output", "output", "result"]


def test_exec_command_and_code(api: Api) -> None:
    def execute(r: httpx.Request) -> httpx.Response:
        body = json.loads(r.content)
        code = 3 if body.get("command") == ["false"] else 0
        return httpx.Response(
            200,
            json={"request_id": "rq", "exit_code": code, "stdout": "o\n", "stderr": "e\n", "duration_ms": 5},
        )

    api.on("POST", "/api/v1/execute", execute)
    code, out, err = run(
        "exec", "--image", "faasd/python:latest", "--env", "A=1", "--", "python3", "-c", "print(1)"
    )
    assert code == 0 and out == "o\n" and "e\n" in err
    assert json.loads(api.last.content) == {
        "command": ["python3", "-c", "print(1)"],
        "image": "faasd/python:latest",
        "env_vars": {"A": "1"},
    }
    code, _, _ = run("exec", "--language", "python", "--code", "print(1)", "--timeout", "2.5")
    assert code == 0
    assert json.loads(api.last.content) == {"code": "print(1)", "language": "python", "timeout_ms": 2500}
    code, _, _ = run("exec", "--", "false")
    assert code == 3
    code, _, err = run("exec", "--code", "x")
    assert code == 2 and "--language" in err


def test_logs_plain_and_follow(api: Api) -> None:
    api.on(
        "GET",
        "/api/v1/functions/hello/logs",
        httpx.Response(
            200,
            json={
                "lines": [
                    {
                        "function": "hello",
                        "stream": "stdout",
                        "text": "hi\n",
                        "timestamp": "2026-11-23T16:30:00.123Z",
                    }
                ]
            },
        ),
    )
    api.on("GET", "/system/logs", httpx.Response(200, content=b'{"name": "hello", "text": "followed"}\n'))
    code, out, _ = run("logs", "hello", "--tail", "5")
    assert code == 0 and out == "16:30:00.123 stdout hi\n"
    assert api.last.url.params["tail"] == "5"
    code, out, _ = run("logs", "hello", "-f", "--json")
    assert code == 0 and json.loads(out)["text"] == "followed"
    assert api.last.url.params["follow"] == "true"


def test_scale_and_rm(api: Api) -> None:
    api.on(
        "POST",
        "/api/v1/functions/hello/scale",
        lambda r: httpx.Response(200, json={"name": "hello", "min": 0, "max": 4, **json.loads(r.content)}),
    )
    api.on("DELETE", "/api/v1/functions/hello", httpx.Response(204))
    code, _, err = run("scale", "hello", "3")
    assert code == 0 and "replicas=3" in err
    code, _, err = run("scale", "hello")
    assert code == 2
    code, _, err = run("rm", "hello")
    assert code == 0 and "deleted hello" in err


def test_secrets_and_keys(api: Api) -> None:
    api.on(
        "POST", "/api/v1/secrets", lambda r: httpx.Response(201, json={"name": json.loads(r.content)["name"]})
    )
    api.on("GET", "/api/v1/secrets", httpx.Response(200, json={"secrets": [{"name": "db"}]}))
    api.on("DELETE", "/api/v1/secrets/db", httpx.Response(204))
    api.on(
        "POST",
        "/api/v1/keys",
        httpx.Response(201, json={"id": "k1", "name": "ci", "scopes": ["deploy"], "key": "fdk_plain"}),
    )
    api.on(
        "GET",
        "/api/v1/keys",
        httpx.Response(200, json={"keys": [{"id": "k1", "name": "ci", "scopes": ["deploy"]}]}),
    )
    api.on("DELETE", "/api/v1/keys/k1", httpx.Response(204))
    code, _, _ = run("secrets", "create", "db", input="s3cret")
    assert code == 0 and json.loads(api.last.content) == {"name": "db", "value": "s3cret"}
    code, out, _ = run("secrets", "ls")
    assert code == 0 and "db" in out
    assert run("secrets", "rm", "db")[0] == 0
    code, out, _ = run("keys", "create", "ci", "--scope", "deploy")
    assert code == 0 and out == "fdk_plain\n"
    assert json.loads(api.last.content) == {"name": "ci", "scopes": ["deploy"]}
    code, out, _ = run("keys", "ls")
    assert code == 0 and "k1" in out and "deploy" in out
    assert run("keys", "rm", "k1")[0] == 0


def test_forbidden_and_rate_limited_messages(api: Api) -> None:
    api.on(
        "GET",
        "/api/v1/keys",
        httpx.Response(403, json={"error": "forbidden", "message": "this key lacks the admin scope"}),
    )
    code, _, err = run("keys", "ls")
    assert code == 1 and "admin scope" in err


def test_connection_error_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    monkeypatch.setattr(
        _context,
        "client_factory",
        lambda s: Client("http://127.0.0.1:9", transport=httpx.MockTransport(refuse)),
    )
    code, out, err = run("ls")
    assert code == 3 and "cannot reach faasd at http://127.0.0.1:9" in err and "Traceback" not in out + err
