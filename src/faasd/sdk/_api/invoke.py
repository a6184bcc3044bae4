"""Invoking a function: sync, async (202 + execution id) and streamed (SSE) calls."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from faasd.sdk._api.calls import API, Call, StreamCall, _model, _p
from faasd.sdk._streams import SSEDecoder
from faasd.sdk.errors import ProtocolError, error_from_response
from faasd.sdk.models import (
    ExecutionAccepted,
    InvokeResult,
    StreamEvent,
    StreamOutput,
    StreamResult,
    StreamStart,
)

# Error codes that, on the invoke route, come from the platform even when the function was started.
_PLATFORM_INVOKE_ERRORS = frozenset(
    {
        "timeout",
        "capacity_exhausted",
        "rate_limited",
        "resource_limit",
        "runtime_failure",
        "payload_too_large",
        "unauthorized",
        "forbidden",
    }
)


Body = bytes | str | dict[str, Any] | list[Any] | None


def encode_body(data: Body, content_type: str | None) -> tuple[bytes, dict[str, str]]:
    headers: dict[str, str] = {}
    if data is None:
        content = b""
    elif isinstance(data, bytes):
        content = data
        headers["content-type"] = "application/octet-stream"
    elif isinstance(data, str):
        content = data.encode()
        headers["content-type"] = "text/plain; charset=utf-8"
    else:
        content = json.dumps(data).encode()
        headers["content-type"] = "application/json"
    if content_type:
        headers["content-type"] = content_type
    return content, headers


def _invoke_headers(
    data: Body,
    content_type: str | None,
    headers: Mapping[str, str] | None,
) -> tuple[bytes, dict[str, str]]:
    content, hdrs = encode_body(data, content_type)
    hdrs.update(headers or {})
    return content, hdrs


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _float_header(headers: httpx.Headers, name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


def _check_invoke(response: httpx.Response) -> None:
    """A response carrying ``X-Execution-Id`` is the function's own, even 4xx/5xx: not an API error."""
    if not response.is_error:
        return
    has_execution = "x-execution-id" in response.headers or "x-call-id" in response.headers
    if not has_execution or _error_code(response) in _PLATFORM_INVOKE_ERRORS:
        raise error_from_response(response)


def _parse_invoke(response: httpx.Response) -> InvokeResult:
    cold = response.headers.get("x-cold-start")
    return InvokeResult(
        status_code=response.status_code,
        headers=response.headers,
        content=response.content,
        execution_id=response.headers.get("x-execution-id") or response.headers.get("x-call-id"),
        cold_start=None if cold is None else cold.lower() == "true",
        duration_ms=_float_header(response.headers, "x-duration-ms"),
    )


INVOKE_TIMEOUT_S = 3600.0 + 60.0
"""Default wait for a sync invoke: the longest function ``timeout_s`` the daemon allows, plus slack
(the daemon answers 504 itself when the function's own time-out passes)."""


def invoke(
    name: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    query: Mapping[str, str] | None,
    timeout: float | None,
) -> Call[InvokeResult]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    return Call(
        "POST",
        f"{API}/functions/{_p(name)}/invoke",
        _parse_invoke,
        params=query,
        content=content,
        headers=hdrs,
        timeout=httpx.Timeout(timeout or INVOKE_TIMEOUT_S, connect=10.0),
        check=_check_invoke,
    )


def invoke_async(
    name: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    query: Mapping[str, str] | None,
    callback_url: str | None,
) -> Call[ExecutionAccepted]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    if callback_url:
        hdrs["x-callback-url"] = callback_url
    return Call(
        "POST",
        f"{API}/functions/{_p(name)}/invoke-async",
        _model(ExecutionAccepted),
        params=query,
        content=content,
        headers=hdrs,
    )


class InvokeStreamDecoder:
    """SSE events of ``invoke-stream`` → typed events; an ``error`` event raises the mapped API error."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.done = False

    def feed(self, line: str) -> list[StreamEvent]:
        event = self._sse.decode(line)
        return self._convert(event) if event is not None else []

    def end(self) -> list[StreamEvent]:
        event = self._sse.flush()
        out = self._convert(event) if event is not None else []
        if not self.done:
            raise ProtocolError(
                "the invocation stream ended before its result event; the daemon may have "
                "restarted, check `faas logs` and the execution"
            )
        return out

    def _convert(self, event: Any) -> list[StreamEvent]:
        if self.done:
            return []
        if event.event == "start":
            data = event.json()
            return [
                StreamStart(execution_id=str(data.get("execution_id")), cold_start=data.get("cold_start"))
            ]
        if event.event in ("stdout", "stderr"):
            return [StreamOutput(stream=event.event, text=event.data)]
        if event.event == "result":
            self.done = True
            data = event.json()
            raw = str(data.get("body") or "")
            if data.get("body_encoding") == "base64":
                import base64

                body = base64.b64decode(raw)
            else:
                body = raw.encode()
            return [
                StreamResult(
                    execution_id=data.get("execution_id"),
                    status=str(data.get("status")),
                    http_status=data.get("http_status"),
                    body=body,
                    headers=dict(data.get("headers") or {}),
                    duration_ms=data.get("duration_ms"),
                    error=data.get("error"),
                    exit_code=data.get("exit_code"),
                )
            ]
        if event.event == "error":
            self.done = True
            raise _error_from_event(event.json())
        return []  # unknown event types (e.g. future progress events) are skipped


def _error_from_event(body: Any) -> Exception:
    request = httpx.Request("POST", "http://stream/")
    response = httpx.Response(_status_for_code(body), json=body, request=request)
    return error_from_response(response)


def _status_for_code(body: Any) -> int:
    from faasd.sdk.errors import _BY_CODE

    code = body.get("error") if isinstance(body, dict) else None
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    return cls.status if cls is not None else 500


def invoke_stream(
    name: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    query: Mapping[str, str] | None,
) -> StreamCall[StreamEvent]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    hdrs["accept"] = "text/event-stream"
    return StreamCall(
        "POST",
        f"{API}/functions/{_p(name)}/invoke-stream",
        InvokeStreamDecoder,
        params=query,
        content=content,
        headers=hdrs,
        timeout=httpx.Timeout(None, connect=10.0),
    )
