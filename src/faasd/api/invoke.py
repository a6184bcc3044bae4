"""Shared helpers for invocation routes: the API side of the API → platform seam (see
:mod:`faasd.platform.invocation`): build the :class:`Invocation`, shape the :class:`Outcome` into the
response."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response

from faasd.errors import PayloadTooLargeError
from faasd.platform.invocation import Invocation, Outcome
from faasd.runtime.headers import HOP_BY_HOP, SERVER_SET, relayable

RESPONSE_DROP = HOP_BY_HOP | SERVER_SET
"""Headers of a function's answer the gateway does not pass on (its own server writes framing and these)."""


async def read_body(request: Request) -> bytes:
    limit: int = request.app.state.platform.settings.max_payload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes (FAASD_MAX_PAYLOAD_BYTES)",
            limit=limit,
        )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLargeError(
                f"request body exceeds the limit of {limit} bytes (FAASD_MAX_PAYLOAD_BYTES)", limit=limit
            )
    return bytes(body)


async def invocation_from(request: Request, path: str = "/") -> Invocation:
    body = await read_body(request)
    return Invocation(
        body=body,
        headers=dict(request.headers),
        path=path if path.startswith("/") else "/" + path,
        method=request.method,
        query=request.url.query,
    )


ERROR_CODE_STATUS = {"pids_exhausted": 422}
"""HTTP status of an invocation that the platform ended for a reason of its own (not the function's error)."""


def function_response(outcome: Outcome, extra_headers: dict[str, str] | None = None) -> Response:
    """The caller's response: the function's own (http runtime: also its errors), or a JSON error with
    what the function left behind (traceback, stderr, output)."""
    r = outcome
    headers = dict(relayable(r.headers.items(), RESPONSE_DROP))
    headers["X-Execution-Id"] = outcome.execution_id
    headers["X-Cold-Start"] = "true" if outcome.cold else "false"
    headers["X-Duration-Ms"] = f"{outcome.duration_ms:.3f}"
    if extra_headers:
        headers.update(extra_headers)
    if r.error is not None and r.runtime != "http":
        details: dict[str, Any] = {**r.error_details, "execution_id": outcome.execution_id}
        if r.exit_code is not None:
            details["exit_code"] = r.exit_code
        if r.traceback:
            details["traceback"] = r.traceback[-8192:]
        if r.stderr:
            details["stderr"] = r.stderr[-8192:].decode("utf-8", "replace")
        if r.body:
            details["output"] = r.body[:8192].decode("utf-8", "replace")
        headers.pop("content-type", None)
        headers.pop("Content-Type", None)
        code = r.error_code or "function_error"
        return Response(
            json.dumps({"error": code, "message": r.error, "details": details}),
            status_code=ERROR_CODE_STATUS.get(code, r.http_status if r.http_status >= 400 else 500),
            headers=headers,
            media_type="application/json",
        )
    media = None if any(k.lower() == "content-type" for k in headers) else "application/octet-stream"
    return Response(r.body, status_code=r.http_status, headers=headers, media_type=media)
