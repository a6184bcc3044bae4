"""CRIU's post-dump action script of faasd's direct dumps: the answer is its exit status, and it never
waits for ever (CRIU holds the sandbox's tasks stopped while it runs)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from faasd.runtime.criu_dump import POST_DUMP_ENV, POST_DUMP_SCRIPT, POST_DUMP_TIMEOUT_ENV, can_call_back

pytestmark = pytest.mark.unit


def _run(work: Path, action: str = "post-dump", wait_s: int = 30) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "CRTOOLS_SCRIPT_ACTION": action,
        POST_DUMP_ENV: str(work),
        POST_DUMP_TIMEOUT_ENV: str(wait_s),
    }
    return subprocess.run([str(POST_DUMP_SCRIPT)], env=env, capture_output=True, timeout=20, check=False)


def _fifos(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "ready")
    os.mkfifo(tmp_path / "go")
    return tmp_path


def test_the_script_ships_executable() -> None:
    assert can_call_back()


def test_other_actions_pass_at_once(tmp_path: Path) -> None:
    assert _run(tmp_path, action="network-lock").returncode == 0  # no FIFOs needed, nothing waited for


@pytest.mark.parametrize(("answer", "status"), [(b"0\n", 0), (b"1\n", 1), (b"", 1)])
def test_faasds_answer_is_the_exit_status(tmp_path: Path, answer: bytes, status: int) -> None:
    work = _fifos(tmp_path)
    ready = os.open(work / "ready", os.O_RDONLY | os.O_NONBLOCK)
    go = os.open(work / "go", os.O_RDWR)  # as faasd holds them while CRIU runs
    said: list[bytes] = []

    def faasd() -> None:
        import select

        select.select([ready], [], [], 15)
        said.append(os.read(ready, 64))
        if answer:
            os.write(go, answer)
        else:
            os.close(go)  # faasd went away without answering

    t = threading.Thread(target=faasd)
    t.start()
    res = _run(work, wait_s=30 if answer else 2)  # no answer: given up within the bound
    t.join(15)
    assert said == [b"\n"] and res.returncode == status
    os.close(ready)
    if answer:
        os.close(go)


def test_without_faasd_it_gives_up(tmp_path: Path) -> None:
    """faasd gone before the call-back (nobody reads "ready", nobody holds "go"): the script neither
    blocks on the FIFOs nor waits past its bound, and fails the dump."""
    work = _fifos(tmp_path)
    res = _run(work, wait_s=1)
    assert res.returncode != 0


def test_a_patched_criu_is_told_apart_by_its_marker(tmp_path: Path) -> None:
    from faasd.runtime import criu_cli
    from faasd.runtime.criu_dump import NATIVE_POST_DUMP_MARKER

    binary = tmp_path / "criu"
    binary.write_bytes(b"\x7fELF" + b"\0" * 4096 + b"log: faasd-freeze-poll-v1: frozen\0")
    assert not criu_cli.has_patch(str(binary), NATIVE_POST_DUMP_MARKER)
    binary.write_bytes(binary.read_bytes() + NATIVE_POST_DUMP_MARKER.encode() + b": answered %d\n\0")
    assert criu_cli.has_patch(str(binary), NATIVE_POST_DUMP_MARKER)  # a rebuilt binary is read again
    assert not criu_cli.has_patch(str(tmp_path / "missing"), NATIVE_POST_DUMP_MARKER)
