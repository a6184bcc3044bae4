"""Typed errors for API failures, mapped from the JSON error body ``{"error", "message", "details"}``.

The SDK has its own error tree, independent of the server's (``faasd.errors``): every error it raises is
a :class:`FaasdClientError` with a ``code``, ``message`` and ``details``; an error the API answered with
is a :class:`FaasdAPIError` whose class is picked by the wire ``code`` (``"not_found"`` → :class:`NotFound`)
or, for a code this SDK does not know, by the HTTP status. Importing the SDK loads no server module.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class FaasdClientError(Exception):
    """Base class of every error the SDK raises (API errors, transport failures, protocol errors)."""

    code: str = "client_error"
    status: int = 0

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class FaasdAPIError(FaasdClientError):
    """The API answered with an error status. ``code``/``status``/``details`` come from the response."""

    code = "api_error"
    status = 0

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.status = status or type(self).status
        self.code = code or type(self).code
        self.details = dict(details or {})
        self.method = method
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message


class InvalidInput(FaasdAPIError):
    code, status = "invalid_input", 400


class Unauthorized(FaasdAPIError):
    code, status = "unauthorized", 401


class Forbidden(FaasdAPIError):
    code, status = "forbidden", 403


class NotFound(FaasdAPIError):
    code, status = "not_found", 404


class Conflict(FaasdAPIError):
    code, status = "conflict", 409


class PayloadTooLarge(InvalidInput):
    code, status = "payload_too_large", 413


class ValidationFailed(InvalidInput):
    """The request JSON does not match the schema; ``details["errors"]`` lists the fields."""

    code, status = "validation_error", 422

    def __str__(self) -> str:
        errors = self.details.get("errors")
        if not isinstance(errors, list) or not errors:
            return super().__str__()
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
            for e in errors
            if isinstance(e, dict)
        )
        return f"{self.message}: {fields} ({self.code}, HTTP {self.status})"


class ResourceLimitExceeded(FaasdAPIError):
    code, status = "resource_limit", 422


class PidsExhausted(ResourceLimitExceeded):
    """A fork failed on the sandbox's pids limit (a fork bomb): the request, or an instance exec's process
    group, was killed as soon as that was seen."""

    code, status = "pids_exhausted", 422


class DiskLimitTooLarge(InvalidInput):
    """The requested disk limit is larger than the daemon's host can hold (``details["max_disk_mb"]``)."""

    code, status = "disk_limit_too_large", 400


class IsolationUnsupported(InvalidInput):
    """The feature cannot work under the chosen isolation (e.g. a CRIU snapshot under gVisor)."""

    code, status = "isolation_unsupported", 400


class RateLimited(FaasdAPIError):
    """Too many requests. ``retry_after`` (seconds) says when to try again; the SDK never retries itself."""

    code, status = "rate_limited", 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.retry_after_s = retry_after if retry_after is not None else 1.0


class CapacityExhausted(RateLimited):
    """No capacity right now (pool saturated, queue full)."""

    code, status = "capacity_exhausted", 429


class QuotaExceeded(RateLimited):
    """A namespace quota (sandboxes, memory, snapshots) would be exceeded; nothing was created.
    ``details``: ``namespace``, ``quota``, ``limit``, ``used``, ``requested``."""

    code, status = "quota_exceeded", 429


class ServerError(FaasdAPIError):
    code, status = "internal_error", 500


class Unavailable(ServerError):
    """The daemon runs without a component the route needs (e.g. ``execute`` without an image store)."""

    code, status = "unavailable", 503


class StorageFull(ServerError):
    code, status = "storage_full", 507


class StorageQuotaExceeded(StorageFull):
    """A namespace's disk quota (instance disks + snapshot bytes) would be exceeded; nothing was kept."""

    code, status = "storage_quota_exceeded", 507


class RuntimeFailure(ServerError):
    code, status = "runtime_failure", 500


class FunctionTimeout(FaasdAPIError):
    """A sync invocation ran longer than the function's ``timeout_s``; the worker was replaced."""

    code, status = "timeout", 504


class FunctionError(FaasdAPIError):
    """The function ran and failed (handler raised, non-zero exit).

    Raised by ``InvokeResult.raise_for_status``, never by ``invoke`` itself.
    """

    code, status = "function_error", 500

    def __init__(self, message: str, *, execution_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.execution_id = execution_id


class RegistryError(FaasdAPIError):
    """The daemon could not pull/push: the registry is unreachable or answered with an error."""

    code, status = "registry_error", 424


class RegistryUnauthorized(RegistryError):
    code, status = "registry_unauthorized", 424


class DigestMismatch(RegistryError):
    code, status = "digest_mismatch", 424


class FaasdConnectionError(FaasdClientError):
    """The daemon could not be reached (refused, DNS, TLS, timeout)."""

    code = "connection_error"
    status = 503

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message, url=url)
        self.url = url


class FaasdTimeout(FaasdConnectionError):
    code = "timeout"
    status = 504


class ExecutionWaitTimeout(FaasdClientError, TimeoutError):
    """``ExecutionHandle.wait`` gave up; the execution itself keeps running on the daemon."""

    code = "wait_timeout"
    status = 504

    def __init__(self, execution_id: str, timeout: float, last_status: str) -> None:
        super().__init__(
            f"execution {execution_id} is still {last_status} after {timeout:g} s; wait "
            f"longer or check it later with `faas executions get {execution_id}`",
            execution_id=execution_id,
            last_status=last_status,
        )
        self.execution_id = execution_id
        self.last_status = last_status


class ProtocolError(FaasdClientError):
    """The daemon answered with something the SDK cannot understand (wrong content type, bad JSON)."""

    code = "protocol_error"
    status = 502


_BY_CODE: dict[str, type[FaasdAPIError]] = {
    cls.code: cls
    for cls in (
        InvalidInput,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        ValidationFailed,
        ResourceLimitExceeded,
        PidsExhausted,
        DiskLimitTooLarge,
        IsolationUnsupported,
        RateLimited,
        CapacityExhausted,
        QuotaExceeded,
        FunctionTimeout,
        StorageFull,
        StorageQuotaExceeded,
        Unavailable,
        RuntimeFailure,
        FunctionError,
        ServerError,
        RegistryError,
        RegistryUnauthorized,
        DigestMismatch,
    )
}
_BY_STATUS: dict[int, type[FaasdAPIError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: InvalidInput,
    409: Conflict,
    413: PayloadTooLarge,
    415: InvalidInput,
    422: ValidationFailed,
    429: RateLimited,
    504: FunctionTimeout,
    507: StorageFull,
}


def _retry_after(response: httpx.Response, details: dict[str, Any]) -> float | None:
    header = response.headers.get("retry-after")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass  # an HTTP date: rare for this API; fall back to the body
    for key in ("retry_after_s", "retry_after"):
        value = details.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def error_from_response(response: httpx.Response) -> FaasdAPIError:
    """Build the typed error for a non-2xx response (body must already be read)."""
    status = response.status_code
    code: str | None = None
    message = ""
    details: dict[str, Any] = {}
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("error")
        if isinstance(raw_code, str):
            code = raw_code
        elif isinstance(raw_code, dict):  # tolerate {"error": {"code":..., "message":...}}
            code = str(raw_code.get("code") or "") or None
            message = str(raw_code.get("message") or "")
        message = str(body.get("message") or body.get("detail") or message or "")
        if isinstance(body.get("details"), dict):
            details = body["details"]
    elif response.content:
        message = response.text.strip()[:500]
    if not message:
        message = f"{response.request.method} {response.request.url.path} failed: HTTP {status}"
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else FaasdAPIError
    kwargs: dict[str, Any] = dict(
        status=status,
        code=code,
        details=details,
        method=response.request.method,
        url=str(response.request.url),
    )
    if issubclass(cls, RateLimited):
        return cls(message, retry_after=_retry_after(response, details), **kwargs)
    return cls(message, **kwargs)


def request_error(base_url: str, exc: httpx.RequestError) -> FaasdClientError:
    """Wrap an httpx failure: a transport failure names the URL and what to check; anything else
    (an undecodable body) is a :class:`ProtocolError`."""
    url = str(exc.request.url) if _has_request(exc) else base_url
    if not isinstance(exc, httpx.TransportError):
        return ProtocolError(f"could not read the answer of {url}: {exc or type(exc).__name__}", url=url)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return FaasdTimeout(
            f"request to {url} timed out ({reason}); the daemon at {base_url} is slow "
            "or stuck, or raise the client timeout",
            url=url,
        )
    return FaasdConnectionError(
        f"cannot reach faasd at {base_url} ({reason}); is the daemon running (`faas up`)? "
        "Set FAAS_URL or --url to point at it",
        url=url,
    )


def _has_request(exc: httpx.RequestError) -> bool:
    try:
        exc.request  # noqa: B018  (raises RuntimeError when the error was raised without a request)
    except RuntimeError:
        return False
    return True
