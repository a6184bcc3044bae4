"""What invoking a function returns: :class:`InvokeResult` (a sync invocation's HTTP response) and the
events of ``invoke_stream`` (:class:`StreamStart`, :class:`StreamOutput`, :class:`StreamResult`).

Plain dataclasses, not API objects: they wrap the function's own response. Also reachable as
``faasd.sdk.models.InvokeResult`` etc.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx


@dataclass(frozen=True)
class InvokeResult:
    """The function's own HTTP response to a sync invocation, plus the platform's headers."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    execution_id: str | None = None
    cold_start: bool | None = None
    duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``function_error`` body when the handler raised / exited non-zero, else None."""
        if self.ok:
            return None
        try:
            body = self.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) and "error" in body else None

    def raise_for_status(self) -> InvokeResult:
        """Raise :class:`faasd.sdk.errors.FunctionError` when the function failed; return self otherwise."""
        from faasd.sdk.errors import FunctionError

        if self.ok:
            return self
        err = self.error or {}
        message = str(err.get("message") or self.text[:500] or f"function answered HTTP {self.status_code}")
        raise FunctionError(
            message,
            status=self.status_code,
            code=str(err.get("error") or "function_error"),
            details=err.get("details") if isinstance(err.get("details"), dict) else None,
            execution_id=self.execution_id,
        )


# Events of ``invoke_stream``.
@dataclass(frozen=True)
class StreamStart:
    execution_id: str
    cold_start: bool | None = None
    kind: Literal["start"] = "start"


@dataclass(frozen=True)
class StreamOutput:
    stream: Literal["stdout", "stderr"]
    text: str
    kind: Literal["output"] = "output"


@dataclass(frozen=True)
class StreamResult:
    execution_id: str | None
    status: str
    http_status: int | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    duration_ms: float | None = None
    error: str | None = None
    exit_code: int | None = None
    kind: Literal["result"] = "result"

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


StreamEvent = StreamStart | StreamOutput | StreamResult
