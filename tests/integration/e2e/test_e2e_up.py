"""``faas up`` runs a working daemon in the foreground and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from faasd.testing.server import free_port, remove_containers
from fixtures.signals import default_sigint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAAS = Path(sys.executable).parent / "faas"


def test_faas_up_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="fdt-up-", dir="/tmp"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAAS_", "FAASD_"))}
    args = ["up", "--port", str(port), "--data-dir", str(base / "data"), "--run-dir", str(base / "run")]
    proc = subprocess.Popen(
        [str(FAAS), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, "COLUMNS": "200"},
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "faas up did not serve /healthz"
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        key = (base / "data" / "admin.key").read_text().strip()
        ls = subprocess.run(
            [str(FAAS), "--url", url, "--api-key", key, "ls", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ls.returncode == 0 and ls.stdout.strip() == "[]", ls.stderr
        # a function with a warm worker, so that the shutdown has a sandbox to clean up
        (tmp_path / "handler.py").write_text("def handle(event, context):\n    return 'up'\n")
        cli_env = {
            **env,
            "FAAS_URL": url,
            "FAAS_API_KEY": key,
            "FAASD_DATA_DIR": str(base / "data"),
            "FAASD_RUN_DIR": str(base / "run"),
        }
        deploy = subprocess.run(
            [str(FAAS), "deploy", "upfn", str(tmp_path), "--runtime", "python", "--min", "1"],
            capture_output=True,
            text=True,
            timeout=300,
            env=cli_env,
        )
        assert deploy.returncode == 0, deploy.stderr
        called = subprocess.run(
            [str(FAAS), "invoke", "upfn"], capture_output=True, text=True, timeout=300, env=cli_env
        )
        assert called.stdout == "up", called.stderr
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code == 0, output
        assert "base images ready" in output and f"starting faasd on http://127.0.0.1:{port}" in output
        assert "faasd stopped" in output
        assert remove_containers(base / "run" / "runc") == [], "faas up left sandboxes running"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
