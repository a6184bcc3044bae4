"""Drive Debian's chromium (headless, through chromedriver) against a console: sign in, navigate, wait
for elements, type, click and write a screenshot of each view."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("FAASD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FAASD_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("FAASD_CONSOLE_SCREENSHOTS", "/tmp/faasd-console-screenshots"))
# The function the journeys deploy: logs to stdout/stderr, keeps state, writes files for merges.
HANDLER = """\
import os, random, sys

STATE = {"n": 0}


def handle(event, context=None):
    body = event.body.decode() if hasattr(event, "body") else str(event)
    if body.startswith("write:"):
        _, name, content = body.split(":", 2)
        with open("/var/tmp/" + name, "w") as f:
            f.write(content)
    STATE["n"] += 1
    print("console-log-line n=%d body=%s" % (STATE["n"], body), flush=True)
    print("to stderr n=%d" % STATE["n"], file=sys.stderr, flush=True)
    return {"n": STATE["n"], "body": body}
"""

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
)


def missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    return None


class Browser:
    def __init__(self, base_url: str, downloads: Path) -> None:
        self.base_url = base_url
        self.downloads = downloads
        self.profile = Path(tempfile.mkdtemp(prefix="fdc-chrome-"))
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for f in FLAGS:
            opts.add_argument(f)
        opts.add_argument(f"--user-data-dir={self.profile}")
        opts.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- navigation and waiting
    def open(self, route: str = "") -> None:
        self.driver.get(f"{self.base_url}/ui/{route}")

    def go(self, hash_route: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_route)

    def wait(self, cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                v = cond()
                if v:
                    return v
            except (StaleElementReferenceException, WebDriverException, LookupError) as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what} (last error: {last}); console log: {self.log()}")

    def el(self, css: str, timeout: float = 60.0) -> WebElement:
        def find() -> WebElement | None:
            found = [e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return found[0] if found else None

        el: WebElement = self.wait(find, timeout, f"a visible {css!r}")
        return el

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str, contains: str, timeout: float = 60.0) -> WebElement:
        def find() -> WebElement | None:
            for e in self.driver.find_elements(By.CSS_SELECTOR, css):
                if contains in e.text:
                    return e
            return None

        el: WebElement = self.wait(find, timeout, f"{css!r} containing {contains!r}")
        return el

    def fill(self, css: str, value: str) -> WebElement:
        e = self.el(css)
        e.clear()
        e.send_keys(value)
        return e

    def click(self, css: str) -> None:
        """Click the element ``css`` selects. Live views re-render rows while the test runs (SSE updates),
        so an element found a moment ago may be replaced before the click lands: find it again then."""
        def enabled() -> WebElement | None:  # found afresh each time: a re-rendered row is a new element
            found = [e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return found[0] if found and found[0].is_enabled() else None

        for attempt in range(5):
            e: WebElement = self.wait(enabled, 60, f"{css!r} visible and enabled")
            try:
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
                e.click()
                return
            except StaleElementReferenceException:
                if attempt == 4:
                    raise

    def button(self, label: str, scope: str = "") -> WebElement:
        return self.text(f"{scope} button".strip(), label)

    def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.select import Select

        self.wait(
            lambda: any(o.get_attribute("value") == value for o in Select(self.el(css)).options),
            60,
            f"option {value!r} in {css!r}",
        )
        Select(self.el(css)).select_by_value(value)

    def accept_confirms(self) -> None:
        self.driver.execute_script("window.confirm = () => true;")

    def screenshot(self, name: str, full: bool = False) -> Path:
        """The view from the top; ``full``: the whole page (the window grown to its height)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.execute_script("window.scrollTo(0, 0)")
        if full:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(1440, min(int(height) + 140, 2400))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            if full:
                self.driver.set_window_size(1440, 1000)
        return path

    def log(self) -> list[str]:
        try:
            return [e["message"] for e in self.driver.get_log("browser")][-10:]
        except WebDriverException:
            return []

    def sign_in(self, key: str) -> None:
        self.open()
        self.fill("#signin-key", key)
        self.click("#signin-submit")
        self.el("#nav a[data-nav=functions]")
        WebDriverWait(self.driver, 30).until(lambda d: d.find_element(By.ID, "who-name").text)
