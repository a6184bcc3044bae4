"""The daemon's packages do not load httpx/httpcore at start-up (only http-mode workers, callbacks and the
instance proxy import them, when used)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"


def test_server_packages_do_not_import_httpx() -> None:
    code = (
        "import sys\n"
        "import faasd.daemon, faasd.api.app, faasd.platform.core, faasd.platform.runtime_adapter\n"
        "import faasd.runtime.workers, faasd.platform.executions, faasd.api.routes_instances\n"
        "print(sorted(m for m in ('httpx', 'httpcore', 'faasd.sdk') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_import_faasd_errors_loads_neither_sdk_nor_httpx() -> None:
    code = (
        "import sys, faasd, faasd.errors\n"
        "print(sorted(m for m in ('httpx', 'faasd.sdk') if m in sys.modules))\n"
        "faasd.Client  # the SDK's names stay reachable, loaded on first access\n"
        "print('faasd.sdk' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["[]", "True"], out.stdout + out.stderr


def test_http_mode_transport_still_importable() -> None:
    from faasd.runtime.netns_http import NetnsTransport

    assert NetnsTransport.__name__ == "NetnsTransport"
