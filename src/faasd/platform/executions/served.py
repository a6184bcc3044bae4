"""The ``executions`` row of a request a worker served on a handed-over connection and answered plainly.

Under gateway load the daemon records every request the workers served themselves (see
:mod:`faasd.runtime.gateway_channel`); most are plain answers: a ``result`` frame with a status, header pairs,
a run time and no output. :func:`plain_row` builds their finished row directly from the report, the row
:meth:`ExecutionService.record_handed` makes for the same report through the runtime's result and the
platform's outcome (a unit test holds the two to the same columns). Anything else (errors, time-outs,
output to store, a malformed frame) is not plain: :func:`plain_row` returns None and ``record_handed``
records it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faasd.platform.executions.records import STORED_BODY_LIMIT, cut, forwardable_headers
from faasd.platform.invocation import header_dict
from faasd.runtime.agent_client import header_pairs
from faasd.runtime.gateway_channel import HandedRequest


def served_times(handed: HandedRequest) -> tuple[datetime, datetime]:
    """When the worker began and finished serving ``handed`` (not when its report was read: reports come
    in batches, later under load)."""
    return (
        datetime.fromtimestamp(handed.started, UTC),
        datetime.fromtimestamp(handed.started + handed.wall_ms / 1000, UTC),
    )


def plain_row(function: str, handed: HandedRequest, path: str) -> dict[str, Any] | None:
    """The finished row of ``handed`` (``path``: the function's path the gateway route matched), or None
    when the worker's answer is not plain."""
    final = handed.final
    if final.get("type") != "result" or handed.stdout or handed.stderr:
        return None
    status = final.get("status", 200)
    pairs = final.get("headers") or []
    run_ms = final.get("run_ms")
    exit_code = final.get("exit_code")
    if (
        type(status) is not int
        or type(pairs) is not list
        or (run_ms is not None and type(run_ms) not in (int, float))
        or (exit_code is not None and type(exit_code) is not int)
    ):
        return None
    body, body_cut = cut(handed.body, STORED_BODY_LIMIT)
    result, result_cut = cut(handed.result, STORED_BODY_LIMIT)
    started, ended = served_times(handed)
    return {  # the columns in the order record_handed sets them
        "id": handed.id,
        "function": function,
        "kind": "sync",
        "status": "failed" if status >= 500 else "succeeded",
        "request_body": body,
        "request_truncated": body_cut,
        "request_headers": forwardable_headers(handed.headers),
        "request_path": path,
        "request_method": handed.method,
        "request_query": handed.query,
        "callback_url": None,
        "created_at": started,
        "attempts": 1,
        "started_at": started,
        "not_before": None,
        "finished_at": ended,
        "result_body": result,
        "result_truncated": result_cut,
        "http_status": status,
        "result_headers": header_dict(header_pairs(pairs)),
        "error": None,
        "exit_code": exit_code,
        "stdout": "",
        "stderr": "",
        "cold_start": False,
        "init_ms": 0.0,
        "wait_ms": 0.0,
        "run_ms": run_ms if run_ms is not None else handed.wall_ms,
    }
