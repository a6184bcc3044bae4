"""Instances in a real browser: start one, run commands in its terminal (WebSocket exec), upload a file
with the file browser and download it back, stop and delete it with the lifecycle buttons."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from console_browser import Browser

from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def _exec(api: httpx.Client, inst_id: str, command: str) -> str:
    r = api.post(f"/api/v1/instances/{inst_id}/exec", json={"command": command})
    assert r.status_code == 200, r.text
    out: str = r.json()["stdout"]
    return out


def test_terminal_and_files(
    browser: Browser,
    faasd_server: FaasdServer,
    admin_api: httpx.Client,
    name: str,
    tmp_path: Path,
    browser_downloads: Path,
    cleanup: list[str],
) -> None:
    b = browser
    b.sign_in(faasd_server.api_key or "")
    b.accept_confirms()
    b.go("#/instances")
    b.select("#instance-image", "faasd/python:latest")
    b.fill("#instance-name", name)
    b.click("#instance-submit")
    row = b.text("[data-test=instances] tr", name, timeout=240)
    inst_id = row.get_attribute("data-instance")
    assert inst_id
    cleanup.append(f"/api/v1/instances/{inst_id}")
    b.text(f"tr[data-instance='{inst_id}']", "running", timeout=120)
    b.screenshot("instances")

    b.go(f"#/instances/{inst_id}")
    b.text("#term-state", "connected")
    term = b.el("#term-input")
    b.wait(lambda: term.is_enabled(), 60, "the terminal prompt")
    term.send_keys("cd /tmp && echo made-in-$(hostname) > term.txt && cat term.txt\n")
    b.text("#term-screen", "made-in-", timeout=120)
    b.wait(lambda: b.el("#term-input").is_enabled(), 60, "the prompt back")
    b.el("#term-input").send_keys("pwd; ls /nonexistent\n")
    b.text("#term-screen", "[exit ", timeout=120)
    screen = b.el("#term-screen").text
    assert "/tmp" in screen.split("pwd; ls /nonexistent", 1)[1]  # cd persisted to the next line
    assert "No such file" in screen
    # the command really ran in the instance: the file is there through the API
    assert _exec(admin_api, inst_id, "cat /tmp/term.txt").startswith("made-in-")

    # upload a file into /tmp with the file browser, see it listed, download it back
    local = tmp_path / "upload-me.txt"
    local.write_bytes(b"uploaded through the console\n" * 100)
    b.fill("#files-path", "/tmp")
    b.click("#files-go")
    b.el("#files-upload").send_keys(str(local))
    b.el("tr[data-file='upload-me.txt']", timeout=120)
    digest = _exec(admin_api, inst_id, "sha256sum /tmp/upload-me.txt").split()[0]
    assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
    b.screenshot("instance")
    b.click("tr[data-file='upload-me.txt'] button[data-action=download]")
    target = browser_downloads / "upload-me.txt"
    b.wait(lambda: target.exists() and target.read_bytes() == local.read_bytes(), 60, "the downloaded file")

    # lifecycle buttons: stop, then delete
    b.go("#/instances")
    b.click(f"tr[data-instance='{inst_id}'] button[data-action=stop]")
    b.text(f"tr[data-instance='{inst_id}']", "stopped", timeout=180)
    b.click(f"tr[data-instance='{inst_id}'] button[data-action=delete]")
    b.wait(lambda: not b.all(f"tr[data-instance='{inst_id}']"), 120, "the instance gone")
    assert admin_api.get(f"/api/v1/instances/{inst_id}").status_code == 404
