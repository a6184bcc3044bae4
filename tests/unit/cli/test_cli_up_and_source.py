"""``faas up`` argument plumbing and the CLI's fallback for source deploys (orchestration only)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from faasd.cli import _context, _source, _up
from faasd.cli.main import app
from faasd.config import Settings
from faasd.sdk import Client

pytestmark = pytest.mark.unit


def test_daemon_argv_skips_base_images_and_passes_overrides() -> None:
    assert _up.daemon_argv(None, None, None, None, False) == ["--base-images", "none"]
    assert _up.daemon_argv("0.0.0.0", 9000, Path("/d"), Path("/r"), True) == [
        "--base-images",
        "none",
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--data-dir",
        "/d",
        "--run-dir",
        "/r",
        "--no-auth",
    ]


def test_settings_for_applies_only_given_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASD_PORT", "7000")
    s = _up.settings_for(None, None, Path("/x"), None, no_auth=True)
    assert (s.port, s.data_dir, s.auth) == (7000, Path("/x"), False)


def test_deploy_dir_falls_back_to_the_local_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("def handle(e, c):\n    return 1\n")
    built: list[tuple[str, Path, str]] = []

    def fake_build(settings: Settings, name: str, source: Path, base: str) -> str:
        built.append((name, source, base))
        return f"faasd-fn/{name}:0123456789ab"

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        sent.append(request)
        if request.url.path == "/api/v1/info":
            return httpx.Response(200, json={"version": "0.1.0", "execute": True})
        return httpx.Response(201, json={"name": "fn", "image": json.loads(request.content)["image"]})

    monkeypatch.setattr(_source, "build_source_image", fake_build)  # imported by deploy when used
    monkeypatch.setattr(
        _context,
        "client_factory",
        lambda s: Client("http://faasd.test", transport=httpx.MockTransport(handler)),
    )
    result = CliRunner().invoke(app, ["deploy", "fn", str(tmp_path), "--runtime", "node"])
    assert result.exit_code == 0, result.output
    assert built == [("fn", tmp_path.resolve(), "faasd/node:latest")]
    assert json.loads(sent[-1].content)["image"] == "faasd-fn/fn:0123456789ab"


def test_help_lists_every_command() -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "deploy",
        "invoke",
        "exec",
        "ls",
        "logs",
        "rm",
        "scale",
        "secrets",
        "keys",
        "up",
        "executions",
        "image",
        "images",
    ):
        assert f" {command} " in result.output, command
