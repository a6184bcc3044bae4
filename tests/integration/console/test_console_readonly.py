"""A read-only (``invoke``) key in a real browser: it sees functions but no deploy form or buttons,
and the server refuses a write made with its session anyway."""

from __future__ import annotations

import httpx
import pytest
from console_browser import Browser

from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_invoke_key_cannot_deploy(
    browser: Browser, faasd_server: FaasdServer, admin_api: httpx.Client, name: str
) -> None:
    r = admin_api.post("/api/v1/keys", json={"name": f"viewer-{name}", "scopes": ["invoke"]})
    assert r.status_code == 201
    key = r.json()
    try:
        b = browser
        b.sign_in(key["key"])
        assert b.el("#who-scopes").text == "invoke"
        b.go("#/functions")
        b.el("#readonly-note")
        assert not b.all("#deploy-form") and not b.all("button[data-test=delete]")
        assert not [a for a in b.all("#nav a[data-nav=keys]") if a.is_displayed()]
        b.screenshot("readonly")
        # even a hand-made request with the session and its CSRF token is refused by the server
        status = b.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            fetch('/ui/api/session').then(r => r.json()).then(s => fetch('/api/v1/functions', {
              method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
              body: JSON.stringify({name: arguments[0], image: 'faasd/python:latest'})
            })).then(r => r.json().then(j => done([r.status, j.message])));
            """,
            name,
        )
        assert status[0] == 403 and "deploy" in status[1]
        assert admin_api.get(f"/api/v1/functions/{name}").status_code == 404
    finally:
        admin_api.delete(f"/api/v1/keys/{key['id']}")
