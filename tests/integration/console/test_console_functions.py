"""The function journey in a real browser: sign in (and a wrong key), deploy from a source archive,
invoke, watch the logs stream, see the charts and the executions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from console_browser import Browser

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def test_wrong_key_then_sign_in_and_out(browser: Browser, faasd_server: object) -> None:
    b = browser
    b.open()
    b.fill("#signin-key", "fdk_000000000000_not-a-real-key")
    b.click("#signin-submit")
    err = b.text("#signin-error", "not valid")
    assert "API key" in err.text
    b.screenshot("signin-wrong-key")
    key = faasd_server.api_key  # type: ignore[attr-defined]
    b.sign_in(key)
    cookies = {c["name"]: c for c in b.driver.get_cookies()}
    assert cookies["faasd_console"]["httpOnly"] and cookies["faasd_console"]["sameSite"] == "Strict"
    # the page's script cannot read the session cookie
    assert "faasd_console" not in b.driver.execute_script("return document.cookie")
    b.click("#sign-out")
    b.el("#signin-key")
    assert "faasd_console" not in {c["name"] for c in b.driver.get_cookies()}


def test_deploy_invoke_logs_charts(
    browser: Browser,
    faasd_server: object,
    admin_api: httpx.Client,
    name: str,
    source_archive: Path,
    cleanup: list[str],
) -> None:
    b = browser
    b.sign_in(faasd_server.api_key)  # type: ignore[attr-defined]
    b.go("#/functions")
    b.fill("#deploy-form input[name=name]", name)
    b.select("#deploy-form select[name=source]", "archive")
    b.el("#deploy-form input[name=archive]").send_keys(str(source_archive))
    b.fill("#deploy-form input[name=handler]", "handler.handle")
    b.fill("#deploy-form input[name=min]", "1")
    cleanup.append(f"/api/v1/functions/{name}")
    b.click("#deploy-submit")
    b.el(f"tr[data-fn='{name}']", timeout=240)
    fn = admin_api.get(f"/api/v1/functions/{name}").json()
    assert fn["image"].startswith(f"faasd-fn/{name}:") and fn["handler"] == "handler.handle"
    # live pool state: the min=1 worker shows up without a reload
    b.text(f"tr[data-fn='{name}'] [data-test=replicas]", "1 (0 busy / 1 idle)", timeout=240)
    b.screenshot("functions")

    b.el(f"tr[data-fn='{name}'] a").click()
    b.el("#logs-state")
    b.text("#logs-state", "live")
    b.fill("#invoke-body", "hello-from-browser")
    b.click("#invoke-submit")
    status = b.el("[data-test=invoke-status]", timeout=180)
    assert status.text == "200"
    body = json.loads(b.el("[data-test=invoke-response]").text)
    assert body == {"n": 1, "body": "hello-from-browser"}
    assert "total" in b.el("#invoke-result").text
    # the function's print arrives in the log panel while the page is open (streamed over SSE)
    b.text("#logs", "console-log-line n=1 body=hello-from-browser", timeout=60)
    b.text("#logs", "to stderr n=1")
    # follow off: the stream closes, new lines do not arrive; on again: they do
    b.click("#logs-follow")
    b.text("#logs-state", "paused")
    b.fill("#invoke-body", "second")
    b.click("#invoke-submit")
    b.wait(
        lambda: '"n": 2' in b.el("[data-test=invoke-response]").text.replace('"n":2', '"n": 2'), 120, "2nd"
    )
    assert "body=second" not in b.el("#logs").text
    b.click("#logs-follow")
    b.text("#logs", "body=second", timeout=60)
    # recent executions and the chart from the daemon's metrics
    b.text("[data-test=fn-executions]", "succeeded", timeout=60)
    b.wait(lambda: b.all("[data-test=charts] svg.chart rect.c-ok"), 60, "invocation bars in the chart")
    assert b.all("[data-test=charts] polyline.c-p50")
    b.wait(
        lambda: b.all("[data-test=charts] rect.c-warm") or b.all("[data-test=charts] rect.c-cold"),
        30,
        "starts",
    )
    b.screenshot("function", full=True)

    # executions page: filter by function and status, open one
    b.go("#/executions")
    b.select("#exec-function", name)
    b.select("#exec-status", "succeeded")
    b.el("[data-test=executions] tr.clickable").click()
    detail = b.el("#execution-detail")
    b.text("#execution-detail", "attempts")
    assert "console-log-line" in detail.text or "n=" in detail.text
    b.screenshot("executions")

    b.go("#/system")
    b.text("[data-test=versions]", "runc version")
    b.text("[data-test=pools]", name)
    b.screenshot("system")
