"""What the OpenAPI document declares besides the success answer: the error schema for every status a
route can answer with, and the real content types of non-JSON answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every error answer: a stable code, a message a user can act on, optional details."""

    error: str
    message: str
    details: dict[str, Any] | None = None


_WHY = {
    400: "invalid input (the message says which and why)",
    401: "no or an unknown API key",
    403: "the API key lacks the scope",
    404: "no such object or route",
    405: "method not allowed",
    409: "conflict with the current state",
    413: "request body larger than FAASD_MAX_PAYLOAD_BYTES",
    422: "the request does not match the schema",
    424: "an image registry the request depends on failed (unreachable, credentials refused, bad digest)",
    429: "rate limited or saturated (Retry-After)",
    500: "internal error (with an error id for the daemon log)",
    503: "unavailable on this daemon",
    504: "timed out",
    507: "storage full",
}

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why} for code, why in _WHY.items()
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer with ``codes`` (plus 500, which any route can)."""
    return {code: ERRORS[code] for code in (*codes, 500)}


SSE: dict[str, Any] = {
    "description": "Server-sent events (each: an `event` name and its `data`)",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "properties": {
                    "event": {"type": "string"},
                    "data": {"type": "string"},
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            }
        }
    },
}
NDJSON: dict[str, Any] = {
    "description": "One JSON object per line",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
}
PROMETHEUS: dict[str, Any] = {
    "description": "Prometheus text exposition format",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
TAR: dict[str, Any] = {
    "description": "A tar archive",
    "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
}
ZIP: dict[str, Any] = {
    "description": "A zip archive",
    "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
}
BINARY: dict[str, Any] = {
    "description": "The function's answer, as it sent it",
    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
}
EMPTY: dict[str, Any] = {"description": "No body"}


# -- the served document --------------------------------------------------------------------------
ALL_ERRORS = (400, 401, 403, 404, 409, 413, 422, 424, 429, 500, 503, 504, 507)
"""Every status a faasd error can be answered with (``faasd.api.errors.HTTP_STATUS``; a unit test checks
that each is here): a guarded route may answer any of them
(auth, rate limit, payload limit, validation, the platform's own errors)."""
PUBLIC_ERRORS = (500, 503)

_PUBLIC = {("get", "/healthz"), ("get", "/health")}
_NO_BODY: dict[tuple[str, str], int] = {
    ("put", "/system/functions"): 202,
    ("post", "/system/functions"): 202,
    ("delete", "/system/functions"): 202,
    ("post", "/system/scale-function/{name}"): 202,
    ("post", "/system/secrets"): 201,
    ("put", "/system/secrets"): 200,
    ("delete", "/system/secrets"): 200,
}
"""OpenFaaS routes that answer with an empty body (as the gateway does)."""
_CONTENT: dict[tuple[str, str], dict[int | str, dict[str, Any]]] = {
    ("get", "/metrics"): {200: PROMETHEUS},
    ("get", "/system/logs"): {200: NDJSON},
    ("post", "/api/v1/functions/{name}/invoke-stream"): {200: SSE},
    ("get", "/api/v1/logs/{execution_id}/stream"): {200: SSE},
    ("get", "/api/v1/instances/{instance_id}/files"): {200: TAR},
    ("delete", "/api/blueprint/functions/{function_id}"): {204: EMPTY},
}
_PASS_THROUGH = (
    "/api/v1/functions/{name}/invoke",
    "/api/v1/sandboxes/{sandbox_id}/invoke",
    "/api/v1/instances/{instance_id}/ports/{port}/{path}",
)
"""The function's (or server's) own answer: any status, any content type."""
_ACCEPTED = {
    ("post", "/api/v1/functions/{name}/invoke"),
    ("post", "/api/v1/functions/{name}/invoke-async"),
}


def _error_response(code: int, ref: str) -> dict[str, Any]:
    return {"description": _WHY[code], "content": {"application/json": {"schema": {"$ref": ref}}}}


def complete_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Declare, for every operation, each error status it can answer with the error schema, and the real
    content types of non-JSON answers. Mutates and returns ``doc``."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    ref = "#/components/schemas/ErrorBody"
    accepted = {
        "description": "Accepted: an asynchronous execution was queued",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            key = (method, path)
            responses: dict[str, Any] = op.setdefault("responses", {})
            if key in _NO_BODY:
                code = _NO_BODY[key]
                for status in [s for s in responses if s.startswith("2")]:
                    del responses[status]
                responses[str(code)] = {"description": "Done (no body, as the OpenFaaS gateway answers)"}
            for code_, spec in _CONTENT.get(key, {}).items():
                responses[str(code_)] = spec
            if path in _PASS_THROUGH:
                responses["default"] = BINARY
                responses.pop("200", None)
            if key in _ACCEPTED:
                responses["202"] = accepted
            for code in PUBLIC_ERRORS if key in _PUBLIC else ALL_ERRORS:
                if str(code) == "503" and key in _PUBLIC and "503" in responses:
                    continue
                responses[str(code)] = _error_response(code, ref)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return doc
