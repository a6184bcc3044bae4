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
    "description": "Server-sent events",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
NDJSON: dict[str, Any] = {
    "description": "One JSON object per line",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
}
PROMETHEUS: dict[str, Any] = {
    "description": "Prometheus text exposition format",
    "content": {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}},
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
