"""Every failure becomes JSON ``{"error", "message", "details"}``; never a bare 500.

HTTP statuses live here, and only here: :data:`HTTP_STATUS` maps each error code of ``faasd.errors``
(and of every package's own error classes) to the status the API answers with.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from faasd.errors import AuthError, CapacityError, FaasdError, InvalidInputError
from faasd.platform.errors import RateLimitedError

log = logging.getLogger("faasd.api")

HTTP_STATUS: dict[str, int] = {
    # error code -> HTTP status. A new FaasdError subclass with a code of its own adds one line here;
    # tests/unit/api/test_api_error_statuses.py fails for any error class in the tree whose code is missing.
    "invalid_input": 400,
    "disk_limit_too_large": 400,
    "isolation_unsupported": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "validation_error": 422,
    "resource_limit": 422,
    "pids_exhausted": 422,
    "registry_error": 424,
    "registry_unauthorized": 424,
    "digest_mismatch": 424,
    "capacity_exhausted": 429,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "internal_error": 500,
    "runtime_failure": 500,
    "state_version": 500,
    "unavailable": 503,
    "timeout": 504,
    "storage_full": 507,
    "storage_quota_exceeded": 507,
}


def http_status(exc: FaasdError) -> int:
    """The status the API answers ``exc`` with: its code's, else the nearest base class's code's, else 500
    (a code missing from :data:`HTTP_STATUS` is a bug the unit tests catch; the user still gets JSON)."""
    for cls in type(exc).__mro__:
        code = exc.code if cls is type(exc) else getattr(cls, "code", None)
        if isinstance(code, str) and code in HTTP_STATUS:
            return HTTP_STATUS[code]
    return 500


def loads_json(raw: bytes, what: str = "request body") -> Any:
    """``json.loads`` for every JSON body the routes parse themselves: any undecodable input (bad UTF-8,
    bad syntax, nesting deeper than the parser's recursion limit) is the caller's mistake, a 400."""
    try:
        return json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError(f"{what} is nested too deeply to parse; flatten it") from None


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def faasd_error_response(exc: FaasdError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, CapacityError | RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = 'Bearer, Basic realm="faasd"'
    return error_response(http_status(exc), exc.code, exc.message, _jsonable(exc.details), headers)


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in details.items():
        out[k] = v if isinstance(v, str | int | float | bool | list | dict | type(None)) else str(v)
    return out


def _validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    metrics_errors = getattr(app.state, "count_error", None)

    def count(code: str) -> None:
        if metrics_errors is not None:
            metrics_errors(code)

    @app.exception_handler(FaasdError)
    async def _faasd(_request: Request, exc: FaasdError) -> JSONResponse:
        count(exc.code)
        if http_status(exc) >= 500:
            log.error("request failed: %s: %s", exc.code, exc.message)
        return faasd_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        count("validation_error")
        errs = _validation_errors(list(exc.errors()))
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
        return error_response(
            422, "validation_error", f"invalid request: {where}: {first['msg']}", {"errors": errs}
        )

    @app.exception_handler(ValidationError)
    async def _model_validation(_request: Request, exc: ValidationError) -> JSONResponse:
        count("validation_error")
        errs = _validation_errors(list(exc.errors()))
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"]) or "request"
        return error_response(
            422, "validation_error", f"invalid request: {where}: {first['msg']}", {"errors": errs}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route; see docs/API.md for the route table"
        return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        error_id = "err_" + secrets.token_hex(8)
        count("internal_error")
        log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return error_response(
            500,
            "internal_error",
            f"internal error {error_id}; the daemon log has the details",
            {"error_id": error_id},
        )
