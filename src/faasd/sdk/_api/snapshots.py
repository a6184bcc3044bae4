"""Snapshots, restores, branches, merges, and the sandboxes restores create (invokable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from faasd.sdk import models as sm
from faasd.sdk._api.calls import API, Call, _model, _none, _p
from faasd.sdk._api.invoke import (
    _PLATFORM_INVOKE_ERRORS,
    INVOKE_TIMEOUT_S,
    Body,
    _error_code,
    _invoke_headers,
    _parse_invoke,
)
from faasd.sdk.errors import error_from_response
from faasd.sdk.models import InvokeResult

SNAPSHOT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Checkpoint/restore/branch/merge move whole process images: allow much longer than the default."""


def create_snapshot(
    sandbox_id: str | None,
    function: str | None,
    labels: Mapping[str, str] | None,
    timeout_s: float | None,
    instance_id: str | None = None,
) -> Call[sm.Snapshot]:
    if [sandbox_id, function, instance_id].count(None) != 2:
        raise ValueError("snapshot needs exactly one of sandbox_id, instance_id or function")
    body: dict[str, Any] = {"labels": dict(labels or {})}
    if sandbox_id is not None:
        body["sandbox_id"] = sandbox_id
    if instance_id is not None:
        body["instance_id"] = instance_id
    if function is not None:
        body["function"] = function
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return Call(
        "POST", f"{API}/snapshots", _model(sm.Snapshot), json=body, timeout=SNAPSHOT_TIMEOUT
    )


def list_snapshots(function: str | None) -> Call[list[sm.Snapshot]]:
    params = {"function": function} if function is not None else None
    return Call("GET", f"{API}/snapshots", _model(list[sm.Snapshot], "snapshots"), params=params)


def get_snapshot(snapshot_id: str) -> Call[sm.Snapshot]:
    return Call("GET", f"{API}/snapshots/{_p(snapshot_id)}", _model(sm.Snapshot))


def delete_snapshot(snapshot_id: str, force: bool) -> Call[None]:
    params = {"force": "true"} if force else None
    return Call("DELETE", f"{API}/snapshots/{_p(snapshot_id)}", _none, params=params)


def gc_snapshots() -> Call[sm.SnapshotGcReport]:
    return Call(
        "POST", f"{API}/snapshots/gc", _model(sm.SnapshotGcReport), timeout=SNAPSHOT_TIMEOUT
    )


def restore_snapshot(snapshot_id: str, seed: int | None = None) -> Call[sm.RestoredSandbox]:
    return Call(
        "POST",
        f"{API}/snapshots/{_p(snapshot_id)}/restore",
        _model(sm.RestoredSandbox),
        json={"seed": seed} if seed is not None else None,
        timeout=SNAPSHOT_TIMEOUT,
    )


def branch_snapshot(snapshot_id: str, count: int, seed: int | None = None) -> Call[list[sm.RestoredSandbox]]:
    body: dict[str, Any] = {"count": count}
    if seed is not None:
        body["seed"] = seed
    return Call(
        "POST",
        f"{API}/snapshots/{_p(snapshot_id)}/branch",
        _model(list[sm.RestoredSandbox], "sandboxes"),
        json=body,
        timeout=SNAPSHOT_TIMEOUT,
    )


def merge(
    snapshot_ids: Sequence[str],
    sandbox_ids: Sequence[str],
    strategy: str,
    labels: Mapping[str, str] | None,
    instance_ids: Sequence[str] = (),
    branches: Sequence[str] = (),
) -> Call[sm.MergeResult]:
    body: dict[str, Any] = {
        "snapshot_ids": list(snapshot_ids),
        "sandbox_ids": list(sandbox_ids),
        "strategy": strategy,
        "labels": dict(labels or {}),
    }
    if instance_ids:
        body["instance_ids"] = list(instance_ids)
    if branches:
        body["branches"] = list(branches)
    return Call(
        "POST", f"{API}/merges", _model(sm.MergeResult), json=body, timeout=SNAPSHOT_TIMEOUT
    )


def list_sandboxes() -> Call[list[sm.RestoredSandbox]]:
    return Call("GET", f"{API}/sandboxes", _model(list[sm.RestoredSandbox], "sandboxes"))


def get_sandbox(sandbox_id: str) -> Call[sm.RestoredSandbox]:
    return Call("GET", f"{API}/sandboxes/{_p(sandbox_id)}", _model(sm.RestoredSandbox))


def delete_sandbox(sandbox_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/sandboxes/{_p(sandbox_id)}", _none)


def _check_sandbox_invoke(response: httpx.Response) -> None:
    """A response carrying ``X-Sandbox-Id`` is the function's own (even 4xx/5xx), unless a platform error."""
    if not response.is_error:
        return
    if "x-sandbox-id" not in response.headers or _error_code(response) in _PLATFORM_INVOKE_ERRORS:
        raise error_from_response(response)


def invoke_sandbox(
    sandbox_id: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> Call[InvokeResult]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    return Call(
        "POST",
        f"{API}/sandboxes/{_p(sandbox_id)}/invoke",
        _parse_invoke,
        content=content,
        headers=hdrs,
        timeout=httpx.Timeout(timeout or INVOKE_TIMEOUT_S, connect=10.0),
        check=_check_sandbox_invoke,
    )
