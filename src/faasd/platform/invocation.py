"""The invoke path's typed seams and the conversions between them (each written once).

One request and one result per layer boundary::

    api        Request ─invocation_from─▶ Invocation            Outcome ─function_response─▶ Response
    platform   Invocation ─invoke_request─▶ InvokeRequest        ▲ Outcome.of_result / .of_limit
    runtime    Worker.invoke(InvokeRequest) ─▶ InvokeResult ─────┘ (or ResourceLimitError)

* API → platform: :class:`Invocation` (what the caller sent) in, :class:`Outcome` (what the function
  answered, and how it ran) out. The API builds and reads these in ``faasd.api.invoke``.
* platform → runtime: the runtime's own :class:`~faasd.runtime.agent_client.InvokeRequest` in (made by
  :func:`invoke_request`), its :class:`~faasd.runtime.agent_client.InvokeResult` out, or a
  :class:`ResourceLimitError` when a limit ended the request (timeout, memory, pids). Workers of the
  platform's pools (:class:`faasd.platform.worker_protocol.PoolWorker`) speak these types as they are.

Bodies are passed by reference all the way (no copies on the hot path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from faasd.errors import PidsExhaustedError, ResourceLimitError
from faasd.runtime.agent_client import InvokeRequest, InvokeResult, StreamChunk

__all__ = ["Invocation", "Outcome", "StreamChunk", "invoke_request"]


@dataclass(frozen=True)
class Invocation:
    """One request to a function, as the caller sent it (API → platform)."""

    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    path: str = "/"
    method: str = "POST"
    query: str = ""


def invoke_request(
    inv: Invocation, *, headers: dict[str, str], timeout_s: float, request_id: str
) -> InvokeRequest:
    """The runtime's request for ``inv`` (platform → runtime). ``headers``: what the function may see
    (the caller decides: function invocations forward only :func:`forwardable_headers`)."""
    return InvokeRequest(
        body=inv.body,
        headers=headers,
        method=inv.method,
        path=inv.path,
        query=inv.query,
        timeout_s=timeout_s,
        request_id=request_id,
    )


def header_dict(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Response headers as one lower-case name → value map (repeated names joined with ``, ``)."""
    out: dict[str, str] = {}
    for k, v in pairs:
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


@dataclass
class Outcome:
    """A finished invocation as the API sees it (platform → API): the function's answer and how it ran."""

    http_status: int
    """The HTTP status the caller gets."""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None
    error: str | None = None
    """Set when the function failed (exception, non-zero exit, crash) or a limit ended it: the reason."""
    traceback: str | None = None
    timed_out: bool = False
    error_code: str | None = None
    """Machine-readable kind of ``error`` when it is not the function's own failure, e.g. ``pids_exhausted``
    (the API answers ``function_error`` when unset)."""
    error_details: dict[str, str | int | float | None] = field(default_factory=dict)
    """With ``error_code``: what the API adds to the error's ``details`` (e.g. ``limit``, ``pids``)."""
    run_ms: float = 0.0
    execution_id: str = ""
    cold: bool = False
    init_ms: float = 0.0
    wait_ms: float = 0.0
    runtime: str = ""
    """The function's runtime (``python``, ``http``, ...): how the API shapes the response."""

    @property
    def status(self) -> str:
        """The execution's status: ``succeeded``, ``failed`` or ``timeout``."""
        if self.timed_out:
            return "timeout"
        if self.error is not None or self.http_status >= 500:
            return "failed"
        return "succeeded"

    @property
    def duration_ms(self) -> float:
        return self.init_ms + self.wait_ms + self.run_ms

    # -- from the runtime (each conversion written once) ---------------------------------------
    @classmethod
    def of_result(cls, r: InvokeResult, *, wall_ms: float) -> Outcome:
        """The function answered (``run_ms``: as measured next to it, else ``wall_ms``)."""
        err = r.error
        t = r.timings
        run_ms = t.run_ms if t.run_ms is not None else t.total_ms
        return cls(
            http_status=r.status,
            body=r.body,
            headers=header_dict(r.headers),
            stdout=r.stdout,
            stderr=r.stderr,
            exit_code=r.exit_code,
            error=err.message if err is not None else None,
            traceback=(err.traceback or None) if err is not None else None,
            run_ms=run_ms if run_ms is not None else wall_ms,
        )

    @classmethod
    def of_limit(cls, exc: ResourceLimitError, *, wall_ms: float) -> Outcome:
        """A limit (timeout, memory, pids, response size) ended the request."""
        timed_out = exc.details.get("limit") == "timeout"
        pids = isinstance(exc, PidsExhaustedError)
        return cls(
            http_status=504 if timed_out else 500,
            error=exc.message,
            timed_out=timed_out,
            error_code=exc.code if pids else None,
            error_details={
                k: v
                for k, v in exc.details.items()
                if k in ("limit", "pids", "detected_ms") and isinstance(v, str | int | float | None)
            }
            if pids
            else {},
            run_ms=wall_ms,
        )

    @classmethod
    def timeout(cls, message: str, *, wall_ms: float) -> Outcome:
        """The worker did not answer in time (the host's backstop, past the function's own timeout)."""
        return cls(http_status=504, timed_out=True, error=message, run_ms=wall_ms)
