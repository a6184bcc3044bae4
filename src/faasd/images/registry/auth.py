"""Registry authentication as an httpx auth flow: the ``WWW-Authenticate`` challenge decides.

A request goes out with what worked before (a bearer token, or basic credentials). On 401 the
challenge is read: ``Basic`` → resend with the credentials; ``Bearer realm=...,service=...,scope=...``
→ ask the token server at ``realm`` (with the credentials, if any; anonymous otherwise) and resend with
the token. A token server that refuses the credentials raises RegistryAuthError; a registry that still
answers 401 is left to the client, which names the image and host in its error.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncGenerator, Generator

import httpx

from faasd.errors import RegistryAuthError, RegistryError
from faasd.images.registry.credentials import Credentials

_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``'Bearer realm="x",service="y"'`` -> ``("bearer", {"realm": "x", "service": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


class RegistryAuth(httpx.Auth):
    """See module docstring. One instance per client (repository + operation)."""

    requires_response_body = False  # blob downloads stream: only the token server's answer is read

    def __init__(self, registry: str, credentials: Credentials | None, scope: str) -> None:
        self.registry = registry
        self.credentials = credentials
        self.scope = scope
        self._token: str | None = None
        self._basic = False
        self._token_req: httpx.Request | None = None
        self.sent_credentials = False
        """True once credentials (basic, or to a token server) were sent: a 401 then means "rejected"."""

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self.auth_flow(request)
        next_request = next(flow)
        while True:
            response = yield next_request
            if response.request is self._token_req:
                await response.aread()
            try:
                next_request = flow.send(response)
            except StopIteration:
                return

    def _apply(self, request: httpx.Request) -> None:
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token}"
        elif self._basic and self.credentials is not None:
            request.headers["Authorization"] = basic_header(self.credentials)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._apply(request)
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None or self._basic:
                return
            self._basic = True
            self.sent_credentials = True
            self._apply(request)
            yield request
            return
        if scheme != "bearer" or "realm" not in params:
            return
        self._token_req = self._token_request(params)
        token_response = yield self._token_req
        self._token = self._read_token(token_response, params["realm"])
        self._apply(request)
        yield request

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        scope = params.get("scope") or self.scope
        query = {"service": params.get("service", self.registry), "scope": scope}
        creds = self.credentials
        if creds is not None and creds.identity_token:
            self.sent_credentials = True
            form = {**query, "grant_type": "refresh_token", "refresh_token": creds.identity_token}
            form["client_id"] = "faasd"
            return httpx.Request("POST", params["realm"], data=form)
        req = httpx.Request("GET", params["realm"], params=query)
        if creds is not None and creds.username:
            self.sent_credentials = True
            req.headers["Authorization"] = basic_header(creds)
        return req

    def _read_token(self, response: httpx.Response, realm: str) -> str:
        if response.status_code in (401, 403):
            creds = self.credentials
            who = f"user {creds.username!r}" if creds is not None and creds.username else "anonymous access"
            raise RegistryAuthError(
                f"the token server of registry {self.registry} ({realm}) refused {who} "
                f"(HTTP {response.status_code}): check the credentials in your docker config.json",
                registry=self.registry,
            )
        if response.status_code != 200:
            raise RegistryError(
                f"the token server of registry {self.registry} ({realm}) answered "
                f"HTTP {response.status_code}",
                registry=self.registry,
            )
        try:
            doc = response.json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server of registry {self.registry} ({realm}) sent no token")
        return token
