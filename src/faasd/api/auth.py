"""Authentication (Bearer or Basic with the key as password), scopes and per-key rate limits."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.requests import HTTPConnection

from faasd.console.session import COOKIE, SessionStore, check_csrf
from faasd.errors import AuthError
from faasd.platform.core import Platform
from faasd.platform.keys import KeyInfo

ANONYMOUS = KeyInfo(
    "anonymous", "anonymous (auth disabled)", frozenset({"admin", "deploy", "invoke"}), None, None
)


def _token(request: HTTPConnection) -> str | None:
    return token_from_header(request.headers.get("authorization"))


def token_from_header(header: str | None) -> str | None:
    """The API key of an ``Authorization`` header (Bearer, or Basic with the key as password)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("malformed Basic credentials; send base64(user:key)") from None
        _user, _, password = decoded.partition(":")
        return password or None
    raise AuthError(f"unsupported authorization scheme {scheme!r}; use 'Bearer <key>'")


def _console_token(request: HTTPConnection) -> str | None:
    """The API key of a console session cookie (CSRF-checked for state-changing requests)."""
    store = getattr(request.app.state, "console_sessions", None)
    if not isinstance(store, SessionStore) or COOKIE not in request.cookies:
        return None
    sess = store.get(request.cookies[COOKIE])
    if sess is None:
        raise AuthError("your console session has expired; sign in again")
    check_csrf(request.scope.get("method", "GET"), request.headers, sess)
    return sess.api_key


def authenticate(request: HTTPConnection) -> KeyInfo:
    platform: Platform = request.app.state.platform
    cached = getattr(request.state, "key", None)
    if isinstance(cached, KeyInfo):
        return cached
    if not platform.settings.auth:
        key = ANONYMOUS
    else:
        token = _token(request)
        if token is None:
            token = _console_token(request)
        if token is None:
            raise AuthError(
                "authentication required: send 'Authorization: Bearer <API key>' "
                "(the bootstrap admin key is in <data_dir>/admin.key)"
            )
        key = platform.keys.verify(token)
        platform.rate_limiter.check(key)
    request.state.key = key
    return key


def require(scope: str) -> Callable[[Request], Awaitable[KeyInfo]]:
    async def dependency(request: Request) -> KeyInfo:
        key = authenticate(request)
        key.require(scope)
        return key

    dependency.__name__ = f"require_{scope}"
    return dependency


async def function_caller(request: Request) -> KeyInfo | None:
    """Who may call ``/function/*`` and ``/async-function/*``: anyone, as with the OpenFaaS gateway (the
    function does its own auth), unless ``FAASD_FUNCTION_AUTH=true`` asks for a key with the ``invoke``
    scope. Without that setting an ``Authorization`` header is passed to the function untouched (it may be
    the function's own credentials), not checked against faasd's keys."""
    platform: Platform = request.app.state.platform
    if platform.settings.function_auth:
        key = authenticate(request)
        key.require("invoke")
        return key
    return None
