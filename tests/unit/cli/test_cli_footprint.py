"""``faas`` starts light: importing the CLI loads typer and the standard library only; the SDK (httpx,
msgspec objects), rich, settings and the server packages are imported by the command that uses them, and
the ``faas`` program never loads what its libraries import opportunistically (httpx's own CLI, trio) nor
pydantic (~70 ms of imports: the SDK's objects are not pydantic models, typer is < 0.29).
``bench/cli_footprint.py`` measures the wall time; these tests fail if an eager import comes back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fixtures import api_answers

SRC = Path(__file__).resolve().parents[3] / "src"

HEAVY = (
    "httpx",
    "httpcore",
    "pydantic",
    "pydantic_settings",
    "rich",
    "asyncio",
    "faasd.sdk",
    "faasd.config",
    "faasd.images",
    "faasd.platform",
    "sqlalchemy",
    "click",  # typer has its own copy; the stand-alone click is httpx's CLI's
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("FAAS_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, env=env, timeout=120
    )


def _loaded_at_exit(names: tuple[str, ...]) -> str:
    """Code that prints (as JSON, at exit) which of ``names`` are loaded modules."""
    return (
        "import atexit, json, sys\n"
        f"loaded = lambda: [m for m in {names!r} if sys.modules.get(m) is not None]\n"
        "atexit.register(lambda: print(json.dumps(loaded())))\n"
    )


def test_importing_the_cli_loads_none_of_the_heavy_modules() -> None:
    out = _python(f"import sys, faasd.cli.main\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"loaded at import: {out.stdout} (import them where they are used)"


def test_faas_version_loads_none_of_them_either() -> None:
    code = _loaded_at_exit(HEAVY) + "from faasd.cli.main import main\nsys.argv[0] = 'faas'\nmain()"
    out = _python(code, "--version")
    assert out.returncode == 0, out.stderr
    version, loaded = out.stdout.strip().splitlines()
    assert version.startswith("faas ") and json.loads(loaded) == []


def test_a_daemon_command_loads_the_sdk_but_not_the_optional_imports() -> None:
    with socket.socket() as s:  # a port nobody listens on: the command fails to connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    names = (
        "httpx",
        "faasd.sdk.client",
        "httpx._main",
        "trio",
        "faasd.config",
        "faasd.images",
        "faasd.sdk.async_client",
        "asyncio",  # the blocking client does without them
    )
    code = _loaded_at_exit(names) + "from faasd.cli.main import main\nsys.argv[0] = 'faas'\nmain()"
    out = _python(code, "--url", f"http://127.0.0.1:{port}", "ls")
    assert out.returncode == 3, out.stdout + out.stderr  # a connection error, told apart without the SDK
    assert "error" in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["httpx", "faasd.sdk.client"]


FUNCTION = {
    **api_answers.FUNCTION,
    "namespace": "openfaas-fn",
    "address": "127.0.0.42",
    "a_field_from_a_newer_daemon": True,
}


class _Functions(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"functions": [FUNCTION]}).encode()
        self.send_response(200 if self.path.startswith("/api/v1/functions") else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def daemon_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Functions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("json_out", [False, True])
def test_faas_ls_reads_the_answer_without_pydantic(
    daemon_url: str, json_out: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    names = ("pydantic", "pydantic_core", "typer._adapters", "msgspec")
    code = _loaded_at_exit(names) + "from faasd.cli.main import main\nsys.argv[0] = 'faas'\nmain()"
    out = _python(code, "--url", daemon_url, "ls", *(["--json"] if json_out else []))
    assert out.returncode == 0, out.stdout + out.stderr
    *printed, loaded = out.stdout.strip().splitlines()
    assert json.loads(loaded) == ["msgspec"]
    if json_out:
        (listed,) = json.loads("\n".join(printed))
        assert listed["name"] == "hello" and listed["status"]["replicas"] == 1
        assert listed["created_at"] == "2026-11-23T16:30:00Z" and "a_field_from_a_newer_daemon" not in listed
    else:
        row = next(line for line in printed if line.startswith("hello"))
        assert "127.0.0.42" in row and "0-4" in row


def test_embedding_the_app_keeps_optional_imports_available() -> None:
    out = _python("import sys, faasd.cli.main\nprint(sys.modules.get('trio', 'absent') is None)")
    assert out.stdout.strip() == "False", out.stdout + out.stderr  # only main() (the faas program) skips them


def _names() -> list[str]:
    import typer.main

    from faasd.cli.main import app

    names = [
        c.name or typer.main.get_command_name(c.callback.__name__)
        for c in app.registered_commands
        if c.callback
    ]
    return names + [g.name for g in app.registered_groups if g.name]


def test_command_name_skips_the_root_options() -> None:
    from faasd.cli.main import command_name

    assert command_name(["ls"]) == "ls"
    assert (
        command_name(["--url", "http://x", "--api-key", "k", "--timeout", "3", "snapshot", "ls"])
        == "snapshot"
    )
    assert command_name(["--url=http://x", "invoke", "f"]) == "invoke"
    assert (
        command_name([]) is None and command_name(["--help"]) is None and command_name(["--version"]) is None
    )
    assert command_name(["--url"]) is None


def test_the_faas_program_builds_only_the_command_it_runs_and_it_behaves_the_same() -> None:
    from typer.testing import CliRunner

    from faasd.cli.main import app, app_for

    runner = CliRunner(env={"COLUMNS": "200"})
    names = _names()
    assert len(names) >= 25 and len(set(names)) == len(names)
    for name in names:
        single = app_for(name)
        assert single is not app
        assert len(single.registered_commands) + len(single.registered_groups) == 1
        for args in ([name, "--help"], [name, "--no-such-option"]):
            full, one = runner.invoke(app, args), runner.invoke(single, args)
            assert (one.exit_code, one.output) == (full.exit_code, full.output), (
                args,
                one.output,
                full.output,
            )
    assert app_for("no-such-command") is app and app_for(None) is app
    assert len(app.registered_commands) > 1  # the full app is untouched


def test_the_async_client_is_loaded_on_first_use() -> None:
    code = (
        "import sys, faasd.sdk, faasd.sdk.client\n"
        "before = 'faasd.sdk.async_client' in sys.modules\n"
        "from faasd.sdk import AsyncClient, AsyncExecutionHandle\n"
        "from faasd.sdk.client import AsyncClient as A2\n"
        "import faasd.sdk.async_client as m\n"
        "print(before, AsyncClient is A2 is m.AsyncClient, AsyncExecutionHandle is m.AsyncExecutionHandle)\n"
        "try:\n    faasd.sdk.Nope\nexcept AttributeError as e:\n    print('Nope' in str(e))\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True", "True"]
