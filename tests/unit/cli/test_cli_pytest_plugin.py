"""The pytest plugin in a child pytest run: it must skip (or, when required, fail) with a clear reason."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

USER_TEST = """
def test_uses_platform(faasd_platform):
    assert faasd_platform.health().status == "ok"


def test_without_platform():
    assert True
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_child(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user_fn.py").write_text(USER_TEST)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_user_fn.py"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


def test_unreachable_daemon_skips_with_the_reason(tmp_path: Path) -> None:
    port = _closed_port()
    env = {**os.environ, "FAAS_URL": f"http://127.0.0.1:{port}"}
    env.pop("FAASD_REQUIRE_PLATFORM", None)
    result = _run_child(tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert f"faasd platform unavailable: FAAS_URL=http://127.0.0.1:{port} does not answer" in result.stdout


def test_require_flag_turns_the_skip_into_an_error(tmp_path: Path) -> None:
    env = {**os.environ, "FAAS_URL": f"http://127.0.0.1:{_closed_port()}"}
    result = _run_child(tmp_path, "--faasd-require", env=env)
    assert result.returncode == 1
    assert "1 passed, 1 error" in result.stdout and "faasd platform unavailable" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="runs the child as user nobody: needs root and setpriv")
def test_unprivileged_user_gets_a_skip_not_a_collection_error() -> None:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="fdt-plugin-", dir="/tmp"))  # pytest's tmp dirs are root-only
    try:
        work.chmod(0o777)
        (work / "test_user_fn.py").write_text(USER_TEST)
        (work / "test_user_fn.py").chmod(0o644)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FAAS_", "FAASD_"))}
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "pytest",
             "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(work), str(work / "test_user_fn.py")],
            capture_output=True, text=True, timeout=120, cwd=work, env={**env, "HOME": str(work)},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "faasd platform unavailable: starting a faasd daemon needs root" in result.stdout
