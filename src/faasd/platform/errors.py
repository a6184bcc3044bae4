"""Errors the platform adds on top of :mod:`faasd.errors` (same JSON shape at the API)."""

from __future__ import annotations

from faasd.errors import FaasdError


class InvocationTimeoutError(FaasdError):
    """A synchronous invocation ran longer than the function's ``timeout_s``."""

    code = "timeout"


class RateLimitedError(FaasdError):
    """An API key exceeded its rate limit."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: object) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class UnavailableError(FaasdError):
    """A feature needs a component this daemon runs without (e.g. no image store)."""

    code = "unavailable"


class QuotaExceededError(FaasdError):
    """A namespace's count or memory quota (sandboxes, memory, snapshots) would be exceeded; nothing
    was created (HTTP 429). ``details``: ``namespace``, ``quota``, ``limit``, ``used``, ``requested``."""

    code = "quota_exceeded"


class StorageQuotaExceededError(FaasdError):
    """A namespace's disk quota (instance disks + snapshot bytes) would be exceeded; nothing was kept
    (HTTP 507)."""

    code = "storage_quota_exceeded"
