"""Executions (records of invocations, polling) and the seed platform's ``execute``/``fork``/
``prewarm``/``pools``/metrics routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict
from urllib.parse import quote

import httpx

from faasd.sdk._api.calls import API, Call, _model, _obj, _p
from faasd.sdk.models import ExecuteRequest, ExecuteResult, Execution, ExecutionLogs, request_from


def get_execution(execution_id: str) -> Call[Execution]:
    return Call("GET", f"{API}/executions/{_p(execution_id)}", _model(Execution))


def list_executions(function: str | None, status: str | None, limit: int | None) -> Call[list[Execution]]:
    pairs = (("function", function), ("status", status), ("limit", limit))
    params = {k: v for k, v in pairs if v is not None}
    return Call("GET", f"{API}/executions", _model(list[Execution], "executions"), params=params)


def execution_logs(execution_id: str) -> Call[ExecutionLogs]:
    return Call("GET", f"{API}/executions/{_p(execution_id)}/logs", _model(ExecutionLogs))


def next_poll_delay(previous: float | None) -> float:
    """Back-off while waiting for an async execution: 50 ms doubling up to 1 s."""
    return 0.05 if previous is None else min(1.0, previous * 2)


# ---------------------------------------------------------------------------------------------- execute


class ExecuteOptions(TypedDict, total=False):
    image: str
    env_vars: Mapping[str, str]
    timeout_ms: int
    memory_mb: int
    cpu_cores: float
    working_dir: str
    stdin: str
    mode: str
    disk_mb: int
    pids: int
    isolation: str
    runtime: str
    cache_key: str
    snapshot_id: str
    branch_from: str
    workspace: str
    ttl_s: float


def _body(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in options.items() if v is not None}


def _run_timeout(options: Mapping[str, Any], runs: int = 1) -> httpx.Timeout:
    return httpx.Timeout(runs * (options.get("timeout_ms") or 30_000) / 1000 + 60.0, connect=10.0)


def fork_execution(
    parent_id: str, command: list[str] | str, options: Mapping[str, Any]
) -> Call[ExecuteResult]:
    return Call(
        "POST",
        f"{API}/executions/{quote(parent_id, safe='')}/fork",
        _model(ExecuteResult),
        json={"command": command, **_body(options)},
        timeout=_run_timeout(options),
    )


def fork(
    branch_from: str, commands: list[list[str] | str], options: Mapping[str, Any]
) -> Call[list[ExecuteResult]]:
    return Call(
        "POST",
        f"{API}/fork",
        _model(list[ExecuteResult]),
        json={"branch_from": branch_from, "commands": commands, **_body(options)},
        timeout=_run_timeout(options, len(commands)),
    )


def prewarm(image: str, count: int, runtime: str | None) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"image": image, "count": count}
    if runtime is not None:
        body["runtime"] = runtime
    return Call("POST", f"{API}/prewarm", _obj, json=body, timeout=httpx.Timeout(300.0, connect=10.0))


def pools() -> Call[dict[str, Any]]:
    return Call("GET", f"{API}/pools", _obj)


def get_metrics(detailed: bool) -> Call[dict[str, Any]]:
    return Call("GET", f"{API}/metrics" + ("/detailed" if detailed else ""), _obj)


def health_check() -> Call[dict[str, Any]]:
    return Call("GET", "/health", _obj)


def execute(
    command: list[str] | str | None, code: str | None, language: str | None, options: ExecuteOptions
) -> Call[ExecuteResult]:
    if (command is None) == (code is None):
        raise ValueError("execute needs either command or code (with language), not both")
    if code is not None and not language:
        raise ValueError("execute with code needs a language: python, node or shell")
    fields: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in options.items()}
    request = request_from(
        {**fields, "command": command, "code": code, "language": language}, ExecuteRequest, "execute"
    )
    timeout_ms = request.timeout_ms or 30_000
    return Call(
        "POST",
        f"{API}/execute",
        _model(ExecuteResult),
        json=request.to_json(),
        timeout=httpx.Timeout(timeout_ms / 1000 + 60.0, connect=10.0),
    )
