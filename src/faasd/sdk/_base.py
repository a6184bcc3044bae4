"""What :class:`~faasd.sdk.client.Client` and :class:`~faasd.sdk.async_client.AsyncClient` share: where
the daemon is, its key and namespace, the default time-outs and connection limits, and how an operation of
``_api`` becomes an HTTP request."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from faasd._version import __version__
from faasd.sdk._api import Call, StreamCall
from faasd.sdk._config import resolve_api_key, resolve_base_url, resolve_namespace

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
"""Idle connections are dropped after 5 s, well before the daemon closes them (``keep_alive_s``, 75 s):
a request is never sent on a connection the server is closing at that moment."""


class ClientBase:
    """The configuration and request building both clients share."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        headers: Mapping[str, str] | None,
        key_file: Path | None,
        namespace: str | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.namespace = resolve_namespace(namespace)
        """Sent as ``?namespace=`` with every request (None: the key's namespace, else the default)."""
        self.api_key = resolve_api_key(api_key, key_file=key_file)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout)
        self.headers: dict[str, str] = {"user-agent": f"faasd-sdk/{__version__}", **(headers or {})}
        if self.api_key:
            self.headers["authorization"] = f"Bearer {self.api_key}"
        self.verify = httpx.URL(self.base_url).scheme != "http"
        """TLS verification (certifi's CA bundle) only for an ``https`` daemon: every request of this client
        is a path relative to ``base_url`` and redirects are not followed, so a plain-HTTP client never
        opens a TLS connection, and loading the CA bundle cost ~90 ms of each ``faas`` command."""

    def _request(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call[Any] | StreamCall[Any],
    ) -> httpx.Request:
        params = call.params
        if self.namespace and not (params and "namespace" in params):
            params = {**(params or {}), "namespace": self.namespace}
        return http.build_request(
            call.method,
            call.path,
            params=params,
            headers=call.headers,
            content=call.content,
            json=call.json,
            files=call.files,
            timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
