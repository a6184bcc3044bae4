"""Namespaces (tenants) and their quotas (docs/API.md "Namespaces")."""

from __future__ import annotations

from typing import Any

from faasd.sdk._api.calls import API, Call, _model, _none, _p
from faasd.sdk.models import Namespace

QUOTAS = ("max_sandboxes", "max_memory_mb", "max_disk_mb", "max_snapshots")


def _quotas(quotas: dict[str, int | None]) -> dict[str, int | None]:
    unknown = set(quotas) - set(QUOTAS)
    if unknown:
        raise ValueError(f"unknown quota(s) {sorted(unknown)}; quotas are {list(QUOTAS)}")
    return dict(quotas)


def quotas(
    max_sandboxes: int | None, max_memory_mb: int | None, max_disk_mb: int | None, max_snapshots: int | None
) -> dict[str, int | None]:
    """The quotas that are given (None: left out, i.e. unlimited on create)."""
    given = dict(zip(QUOTAS, (max_sandboxes, max_memory_mb, max_disk_mb, max_snapshots), strict=True))
    return {k: v for k, v in given.items() if v is not None}


def list_namespaces() -> Call[list[Namespace]]:
    return Call("GET", f"{API}/namespaces", _model(list[Namespace], "namespaces"))


def get_namespace(name: str) -> Call[Namespace]:
    return Call("GET", f"{API}/namespaces/{_p(name)}", _model(Namespace))


def create_namespace(
    name: str, quotas: dict[str, int | None], labels: dict[str, str] | None
) -> Call[Namespace]:
    body: dict[str, Any] = {"name": name, **_quotas(quotas)}
    if labels:
        body["labels"] = labels
    return Call("POST", f"{API}/namespaces", _model(Namespace), json=body)


def set_namespace_quotas(name: str, quotas: dict[str, int | None]) -> Call[Namespace]:
    path = f"{API}/namespaces/{_p(name)}"
    return Call("PATCH", path, _model(Namespace), json=_quotas(quotas))


def delete_namespace(name: str) -> Call[None]:
    return Call("DELETE", f"{API}/namespaces/{_p(name)}", _none)
