"""Mapping of API error bodies and transport failures to the SDK's typed errors."""

from __future__ import annotations

import httpx
import pytest

from faasd import errors as core
from faasd.sdk import (
    CapacityExhausted,
    Client,
    Conflict,
    FaasdAPIError,
    FaasdClientError,
    FaasdConnectionError,
    FaasdTimeout,
    Forbidden,
    FunctionTimeout,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ResourceLimitExceeded,
    RuntimeFailure,
    ServerError,
    StorageFull,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)

pytestmark = pytest.mark.unit


def _client(response: httpx.Response) -> Client:
    return Client("http://faasd.test", api_key="k", transport=httpx.MockTransport(lambda r: response))


@pytest.mark.parametrize(
    ("status", "code", "cls", "parent"),
    [
        (400, "invalid_input", InvalidInput, FaasdAPIError),
        (401, "unauthorized", Unauthorized, FaasdAPIError),
        (403, "forbidden", Forbidden, FaasdAPIError),
        (404, "not_found", NotFound, FaasdAPIError),
        (409, "conflict", Conflict, FaasdAPIError),
        (413, "payload_too_large", PayloadTooLarge, InvalidInput),
        (422, "validation_error", ValidationFailed, InvalidInput),
        (422, "resource_limit", ResourceLimitExceeded, FaasdAPIError),
        (429, "rate_limited", RateLimited, FaasdAPIError),
        (429, "capacity_exhausted", CapacityExhausted, RateLimited),
        (500, "runtime_failure", RuntimeFailure, ServerError),
        (500, "internal_error", ServerError, FaasdAPIError),
        (503, "unavailable", Unavailable, ServerError),
        (504, "timeout", FunctionTimeout, FaasdAPIError),
        (507, "storage_full", StorageFull, ServerError),
    ],
)
def test_error_codes_map_to_types(
    status: int, code: str, cls: type[FaasdAPIError], parent: type[FaasdAPIError]
) -> None:
    body = {"error": code, "message": f"something about {code}", "details": {"name": "hello"}}
    with pytest.raises(cls) as info:
        _client(httpx.Response(status, json=body)).get_function("hello")
    err = info.value
    assert type(err) is cls
    assert isinstance(err, parent) and isinstance(err, FaasdClientError)
    # the SDK's own tree: an SDK error is not one of the server's (faasd.errors) classes
    assert not isinstance(err, core.FaasdError)
    assert err.status == status and err.code == code and err.message == f"something about {code}"
    assert err.details == {"name": "hello"}
    assert err.method == "GET" and err.url == "http://faasd.test/api/v1/functions/hello"
    assert f"something about {code}" in str(err)


def test_unknown_code_falls_back_to_status() -> None:
    with pytest.raises(NotFound):
        _client(httpx.Response(404, json={"error": "weird", "message": "m"})).get_function("x")
    with pytest.raises(ServerError):
        _client(httpx.Response(502, text="bad gateway")).get_function("x")
    with pytest.raises(FaasdAPIError) as info:
        _client(httpx.Response(418, text="teapot")).get_function("x")
    assert type(info.value) is FaasdAPIError and info.value.message == "teapot"


def test_non_json_error_body_keeps_the_text() -> None:
    with pytest.raises(ServerError, match="upstream exploded"):
        _client(httpx.Response(500, text="upstream exploded")).list_functions()
    with pytest.raises(ServerError, match="HTTP 503"):
        _client(httpx.Response(503)).list_functions()


def test_retry_after_from_header_then_details() -> None:
    with pytest.raises(RateLimited) as info:
        _client(
            httpx.Response(
                429, json={"error": "rate_limited", "message": "slow down"}, headers={"Retry-After": "3"}
            )
        ).health()
    assert info.value.retry_after == 3.0
    with pytest.raises(CapacityExhausted) as info2:
        _client(
            httpx.Response(
                429,
                json={"error": "capacity_exhausted", "message": "full", "details": {"retry_after_s": 1.5}},
            )
        ).health()
    assert info2.value.retry_after == 1.5 and isinstance(info2.value, RateLimited)


def test_validation_error_lists_fields() -> None:
    body = {
        "error": "validation_error",
        "message": "request does not match the schema",
        "details": {"errors": [{"loc": ["body", "limits", "memory_mb"], "msg": "too small", "type": "x"}]},
    }
    with pytest.raises(ValidationFailed) as info:
        _client(httpx.Response(422, json=body)).list_functions()
    assert "body.limits.memory_mb: too small" in str(info.value)


def test_success_with_non_json_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        _client(httpx.Response(200, text="<html>")).list_functions()
    with pytest.raises(ProtocolError, match="'functions'"):
        _client(httpx.Response(200, json={"items": []})).list_functions()


def test_connection_refused_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = Client("http://127.0.0.1:1", transport=httpx.MockTransport(refuse))
    with pytest.raises(FaasdConnectionError, match=r"cannot reach faasd at http://127\.0\.0\.1:1") as info:
        client.health()
    assert "faas up" in str(info.value) and info.value.url == "http://127.0.0.1:1/healthz"


def test_real_connection_refused() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: bind, read the number, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FaasdConnectionError, match=f"127.0.0.1:{port}"):
        Client(f"http://127.0.0.1:{port}", api_key="k").health()


def test_timeout_is_its_own_type() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(FaasdTimeout, match="timed out"):
        Client("http://faasd.test", transport=httpx.MockTransport(slow)).health()


def test_stream_error_event_raises_mapped_error() -> None:
    sse = (
        'event: start\ndata: {"execution_id": "ex_1", "cold_start": true}\n\n'
        'event: error\ndata: {"error": "timeout", "message": "function exceeded 1 s"}\n\n'
    )
    client = _client(httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"}))
    events = client.invoke_stream("f")
    assert next(events).kind == "start"
    with pytest.raises(FunctionTimeout, match="exceeded 1 s"):
        next(events)


def test_stream_http_error_before_start_raises() -> None:
    client = _client(httpx.Response(404, json={"error": "not_found", "message": "no function f"}))
    with pytest.raises(NotFound, match="no function f"):
        list(client.invoke_stream("f"))


def test_stream_cut_before_result_is_a_protocol_error() -> None:
    sse = 'event: start\ndata: {"execution_id": "ex_1"}\n\nevent: stdout\ndata: partial\n\n'
    client = _client(httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"}))
    with pytest.raises(ProtocolError, match="before its result"):
        list(client.invoke_stream("f"))


def test_invoke_timeout_with_execution_id_is_still_an_api_error() -> None:
    client = _client(
        httpx.Response(
            504, json={"error": "timeout", "message": "took too long"}, headers={"x-execution-id": "ex_3"}
        )
    )
    with pytest.raises(FunctionTimeout):
        client.invoke("f")


def test_response_of_the_wrong_shape_is_a_protocol_error() -> None:
    missing = r"unexpected answer .* missing required field `name` - at `\$\[0\]`"
    with pytest.raises(ProtocolError, match=missing):
        _client(httpx.Response(200, json={"functions": [{"image": "x"}]})).list_functions()
    wrong_type = r"unexpected answer .* Expected `int \| null`, got `str` - at `\$\[0\]\.port`"
    answer = {"functions": [{"name": "f", "image": "x", "port": "web"}]}
    with pytest.raises(ProtocolError, match=wrong_type):
        _client(httpx.Response(200, json=answer)).list_functions()


def test_undecodable_body_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"\x00garbage"),
                              headers={"content-encoding": "gzip"})

    client = Client("http://faasd.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ProtocolError, match="could not read the answer"):
        client.list_functions()


def test_every_sdk_error_is_a_client_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = Client("http://x", transport=httpx.MockTransport(refuse))
    with pytest.raises(FaasdClientError) as info:
        client.health()
    assert isinstance(info.value, FaasdConnectionError) and info.value.code == "connection_error"
    assert info.value.to_dict()["error"] == "connection_error"
    with pytest.raises(FaasdClientError):
        _client(httpx.Response(200, text="<html>")).list_functions()


def test_importing_the_sdk_loads_no_server_module() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[3] / "src"
    code = (
        "import sys, faasd.sdk\n"
        "print(sorted(m for m in sys.modules if m.startswith('faasd.')\n"
        "             and not m.startswith('faasd.sdk') and m != 'faasd._version'))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_sdk_statuses_agree_with_the_api_table() -> None:
    """An error event of a stream has no HTTP status: the SDK fills in its class's, which must be the
    status the API answers that code with."""
    from faasd.api.errors import HTTP_STATUS
    from faasd.sdk.errors import _BY_CODE

    known = {code: cls.status for code, cls in _BY_CODE.items() if code in HTTP_STATUS}
    assert len(known) >= 20
    assert known == {code: HTTP_STATUS[code] for code in known}
