"""Python SDK of the faasd API: ``Client`` (blocking) and ``AsyncClient`` (asyncio), both on httpx.

>>> from faasd.sdk import Client
>>> with Client() as faas:                       # FAAS_URL / FAAS_API_KEY, or http://127.0.0.1:8080
...     faas.deploy("hello", image="faasd/python:latest", handler="handler.handle")
...     faas.invoke("hello", {"name": "ada"}).json()
"""

from typing import TYPE_CHECKING, Any

from faasd.sdk._api import DeployOptions, ExecuteOptions
from faasd.sdk._config import DEFAULT_URL
from faasd.sdk._streams import ServerSentEvent
from faasd.sdk.client import Client, ExecutionHandle
from faasd.sdk.errors import (
    CapacityExhausted,
    Conflict,
    DiskLimitTooLarge,
    ExecutionWaitTimeout,
    FaasdAPIError,
    FaasdClientError,
    FaasdConnectionError,
    FaasdTimeout,
    Forbidden,
    FunctionError,
    FunctionTimeout,
    InvalidInput,
    IsolationUnsupported,
    NotFound,
    PayloadTooLarge,
    PidsExhausted,
    ProtocolError,
    QuotaExceeded,
    RateLimited,
    ResourceLimitExceeded,
    RuntimeFailure,
    ServerError,
    StorageFull,
    StorageQuotaExceeded,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from faasd.sdk.models import (
    ApiKey,
    CreatedApiKey,
    ExecuteRequest,
    ExecuteResult,
    Execution,
    ExecutionAccepted,
    ExecutionLogs,
    Function,
    FunctionSpec,
    Health,
    Info,
    InvokeResult,
    Limits,
    LogLine,
    Namespace,
    NamespaceQuotas,
    NamespaceUsage,
    PoolStatus,
    ScaleBounds,
    ScaleResult,
    Secret,
    StreamEvent,
    StreamOutput,
    StreamResult,
    StreamStart,
)

if TYPE_CHECKING:
    from faasd.sdk.async_client import AsyncClient, AsyncExecutionHandle


def __getattr__(name: str) -> Any:
    """``AsyncClient`` and ``AsyncExecutionHandle``, loaded on first use (they bring asyncio: ~15 ms)."""
    if name in ("AsyncClient", "AsyncExecutionHandle"):
        from faasd.sdk import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_URL",
    "ApiKey",
    "AsyncClient",
    "AsyncExecutionHandle",
    "CapacityExhausted",
    "Client",
    "Conflict",
    "CreatedApiKey",
    "DeployOptions",
    "DiskLimitTooLarge",
    "ExecuteOptions",
    "ExecuteRequest",
    "ExecuteResult",
    "Execution",
    "ExecutionAccepted",
    "ExecutionHandle",
    "ExecutionLogs",
    "ExecutionWaitTimeout",
    "FaasdAPIError",
    "FaasdClientError",
    "FaasdConnectionError",
    "FaasdTimeout",
    "Forbidden",
    "Function",
    "FunctionError",
    "FunctionSpec",
    "FunctionTimeout",
    "Health",
    "Info",
    "InvalidInput",
    "InvokeResult",
    "IsolationUnsupported",
    "Limits",
    "LogLine",
    "Namespace",
    "NamespaceQuotas",
    "NamespaceUsage",
    "NotFound",
    "PayloadTooLarge",
    "PidsExhausted",
    "PoolStatus",
    "ProtocolError",
    "QuotaExceeded",
    "RateLimited",
    "ResourceLimitExceeded",
    "RuntimeFailure",
    "ScaleBounds",
    "ScaleResult",
    "Secret",
    "ServerError",
    "ServerSentEvent",
    "StorageFull",
    "StorageQuotaExceeded",
    "StreamEvent",
    "StreamOutput",
    "StreamResult",
    "StreamStart",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
