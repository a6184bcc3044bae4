"""Secrets and API keys."""

from __future__ import annotations

from typing import Any

from faasd.sdk._api.calls import API, Call, _model, _none, _p
from faasd.sdk.models import ApiKey, CreatedApiKey, Secret


def list_secrets() -> Call[list[Secret]]:
    return Call("GET", f"{API}/secrets", _model(list[Secret], "secrets"))


def create_secret(name: str, value: str) -> Call[Secret]:
    return Call("POST", f"{API}/secrets", _model(Secret), json={"name": name, "value": value})


def update_secret(name: str, value: str) -> Call[Secret]:
    return Call("PUT", f"{API}/secrets/{_p(name)}", _model(Secret), json={"value": value})


def delete_secret(name: str) -> Call[None]:
    return Call("DELETE", f"{API}/secrets/{_p(name)}", _none)


def list_api_keys() -> Call[list[ApiKey]]:
    return Call("GET", f"{API}/keys", _model(list[ApiKey], "keys"))


def create_api_key(
    name: str,
    scopes: list[str],
    rate_limit_rps: float | None,
    burst: int | None,
    namespace: str | None = None,
) -> Call[CreatedApiKey]:
    body: dict[str, Any] = {"name": name, "scopes": scopes}
    if rate_limit_rps is not None:
        body["rate_limit_rps"] = rate_limit_rps
    if burst is not None:
        body["burst"] = burst
    if namespace is not None:  # the key acts in that namespace only
        body["namespace"] = namespace
    return Call("POST", f"{API}/keys", _model(CreatedApiKey), json=body)


def delete_api_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/keys/{_p(key_id)}", _none)
