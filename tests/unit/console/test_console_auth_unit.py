"""Sign-in, cookie sessions on the JSON API, CSRF and scopes through the real app (fake workers)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from faasd.console.session import COOKIE
from faasd.platform.core import Platform

FN = {"name": "hello", "image": "img:1"}


def sign_in(c: TestClient, key: str) -> dict[str, object]:
    r = c.post("/ui/api/session", json={"key": key})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_page_and_wrong_key(console: tuple[TestClient, Platform, str]) -> None:
    c, _, _ = console
    r = c.get("/ui/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert c.get("/ui/static/app.js").status_code == 200
    assert c.get("/ui/api/session").json()["signed_in"] is False
    r = c.post("/ui/api/session", json={"key": "fdk_nope_nope"})
    assert r.status_code == 401 and "not valid" in r.json()["message"]
    assert COOKIE not in r.cookies
    assert c.get("/api/v1/functions").status_code == 401


def test_cookie_session_reads_and_csrf_guards_writes(console: tuple[TestClient, Platform, str]) -> None:
    c, _, admin = console
    sess = sign_in(c, admin)
    cookie = c.cookies.jar
    (ck,) = [x for x in cookie if x.name == COOKIE]
    assert ck.has_nonstandard_attr("HttpOnly") and ck.get_nonstandard_attr("SameSite") == "strict"
    assert sess["scopes"] == ["admin", "deploy", "invoke"] and sess["csrf"]
    assert c.get("/api/v1/functions").status_code == 200  # GET: the cookie is enough
    r = c.post("/api/v1/functions", json=FN)
    assert r.status_code == 403 and "CSRF" in r.json()["message"]
    r = c.post("/api/v1/functions", json=FN, headers={"X-CSRF-Token": "x" + str(sess["csrf"])})
    assert r.status_code == 403
    r = c.post(
        "/api/v1/functions",
        json=FN,
        headers={"X-CSRF-Token": str(sess["csrf"]), "Origin": "http://evil.example"},
    )
    assert r.status_code == 403 and "origin" in r.json()["message"]
    r = c.post(
        "/api/v1/functions",
        json=FN,
        headers={"X-CSRF-Token": str(sess["csrf"]), "Origin": "http://testserver"},
    )
    assert r.status_code == 201, r.text
    # a Bearer key still works without CSRF (CLI/SDK unchanged)
    fresh = TestClient(c.app, base_url="http://testserver")
    assert (
        fresh.delete("/api/v1/functions/hello", headers={"Authorization": f"Bearer {admin}"}).status_code
        == 204
    )


def test_invoke_key_reads_but_cannot_change(console: tuple[TestClient, Platform, str]) -> None:
    c, p, _ = console
    _row, token = p.keys.create("viewer", ["invoke"])
    sess = sign_in(c, token)
    assert sess["scopes"] == ["invoke"]
    assert c.get("/api/v1/functions").status_code == 200
    r = c.post("/api/v1/functions", json=FN, headers={"X-CSRF-Token": str(sess["csrf"])})
    assert r.status_code == 403 and "deploy" in r.json()["message"]
    assert c.get("/api/v1/keys").status_code == 403


def test_sign_out_and_key_deletion_end_the_session(console: tuple[TestClient, Platform, str]) -> None:
    c, p, _ = console
    row, token = p.keys.create("temp", ["deploy"])
    sess = sign_in(c, token)
    assert c.delete("/ui/api/session").status_code == 403  # sign-out needs the CSRF token too
    assert c.delete("/ui/api/session", headers={"X-CSRF-Token": str(sess["csrf"])}).status_code == 204
    assert c.get("/api/v1/functions").status_code == 401
    sign_in(c, token)
    p.keys.delete(row.id)
    assert c.get("/ui/api/session").json()["signed_in"] is False
    assert c.get("/api/v1/functions").status_code == 401


def test_console_json_routes_with_a_session(console: tuple[TestClient, Platform, str]) -> None:
    c, _, admin = console
    sess = sign_in(c, admin)
    csrf = {"X-CSRF-Token": str(sess["csrf"])}
    assert c.post("/api/v1/functions", json=FN, headers=csrf).status_code == 201
    r = c.post("/ui/api/functions/hello/invoke", json={"method": "PUT", "path": "/x?q=1", "body": "hi"})
    assert r.status_code == 403  # CSRF applies to console routes too
    r = c.post(
        "/ui/api/functions/hello/invoke",
        json={"method": "PUT", "path": "/x?q=1", "headers": {"X-A": "1"}, "body": "hi"},
        headers=csrf,
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == 200 and out["execution_id"] and set(out["timings"]) >= {"run_ms", "total_ms"}
    system = c.get("/ui/api/system").json()
    assert system["health"]["status"] == "ok" and system["versions"]["kernel"]
    assert "hello" in system["pools"]
    hist = c.get("/ui/api/metrics/history", params={"function": "hello"}).json()
    assert hist["totals"]["hello"]["invocations"] == 1
    assert c.get("/ui/api/lineage").json()["available"] is False  # fake workers: no snapshots
