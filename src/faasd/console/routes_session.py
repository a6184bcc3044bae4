"""``/ui``: the console page, and sign-in / sign-out (``/ui/api/session``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from faasd._version import __version__
from faasd.api.auth import ANONYMOUS
from faasd.console.deps import console_of, platform_of
from faasd.console.session import COOKIE, check_csrf, check_origin
from faasd.errors import AuthError, ForbiddenError

STATIC = Path(__file__).parent / "static"
router = APIRouter()


def csp(request: Request) -> str:
    """Everything from this origin only: nothing is fetched from another host."""
    host = request.headers.get("host", "")
    ws = f"ws://{host} wss://{host}" if host else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {ws}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


@router.get("/ui", include_in_schema=False)
async def ui_redirect() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", include_in_schema=False)
async def index(request: Request) -> Response:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": csp(request),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=512)


def _session_view(name: str, key_id: str, scopes: frozenset[str], csrf: str, auth: bool) -> dict[str, Any]:
    return {
        "signed_in": True,
        "auth": auth,
        "key_id": key_id,
        "key_name": name,
        "scopes": sorted(scopes),
        "csrf": csrf,
        "version": __version__,
    }


@router.get("/ui/api/session")
async def get_session(request: Request) -> dict[str, Any]:
    """Who is signed in (and the CSRF token for writes), or ``{"signed_in": false}``; never 401."""
    p = platform_of(request)
    if not p.settings.auth:
        return _session_view(ANONYMOUS.name, ANONYMOUS.id, ANONYMOUS.scopes, "", False)
    sess = console_of(request).sessions.get(request.cookies.get(COOKIE))
    if sess is None:
        return {"signed_in": False, "auth": True, "version": __version__}
    try:
        key = p.keys.verify(sess.api_key)  # a deleted key ends its sessions
    except AuthError:
        console_of(request).sessions.delete(request.cookies.get(COOKIE))
        return {"signed_in": False, "auth": True, "version": __version__}
    return _session_view(key.name, key.id, key.scopes, sess.csrf, True)


@router.post("/ui/api/session")
async def sign_in(body: SignIn, request: Request) -> Response:
    check_origin(request.headers)  # no login CSRF from another site
    p = platform_of(request)
    if not p.settings.auth:
        return JSONResponse(_session_view(ANONYMOUS.name, ANONYMOUS.id, ANONYMOUS.scopes, "", False))
    try:
        key = p.keys.verify(body.key.strip())
    except AuthError:
        raise AuthError(
            "that API key is not valid: paste a key created with 'faas keys create' "
            "(the bootstrap admin key is in <data_dir>/admin.key)"
        ) from None
    if key.namespace is not None:  # the console's views (lineage, live state, metrics) span namespaces
        raise ForbiddenError(
            f"API key {key.name!r} is bound to namespace {key.namespace!r}; the console shows every "
            "namespace, so it signs in with keys without a namespace (use the API, SDK or faas CLI)",
            key_namespace=key.namespace,
        )
    state = console_of(request)
    state.sessions.delete(request.cookies.get(COOKIE))
    token, sess = state.sessions.create(body.key.strip(), key.id, key.name, key.scopes)
    resp = JSONResponse(_session_view(key.name, key.id, key.scopes, sess.csrf, True))
    resp.set_cookie(
        COOKIE,
        token,
        max_age=int(state.sessions.ttl_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


@router.delete("/ui/api/session", status_code=204)
async def sign_out(request: Request) -> Response:
    state = console_of(request)
    token = request.cookies.get(COOKIE)
    sess = state.sessions.get(token)
    if sess is not None:
        check_csrf(request.method, request.headers, sess)
        state.sessions.delete(token)
    resp = Response(status_code=204)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp
