"""Starting a created container through its exec FIFO (what ``runc start`` does), on a runc-like state dir."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from faasd.errors import RuntimeFailure
from faasd.runtime import execfifo


def _state_dir(tmp_path: Path, pid: int) -> Path:
    d = tmp_path / "fd-x"
    d.mkdir()
    os.mkfifo(d / execfifo.FIFO_NAME, 0o622)
    (d / "state.json").write_text(json.dumps({"init_process_pid": pid}))
    return d


def test_reads_the_byte_init_writes_and_removes_the_fifo(tmp_path: Path) -> None:
    d = _state_dir(tmp_path, os.getpid())
    got: list[bytes] = []

    def init() -> None:  # like runc init: a blocking open for writing, then one byte
        with open(d / execfifo.FIFO_NAME, "wb", buffering=0) as f:
            f.write(b"0")
        got.append(b"written")

    t = threading.Thread(target=init)
    t.start()
    assert execfifo.start_via_fifo(d, timeout_s=10) is True
    t.join(10)
    assert got == [b"written"]
    assert not (d / execfifo.FIFO_NAME).exists()


def test_no_fifo_leaves_it_to_runc_start(tmp_path: Path) -> None:
    assert execfifo.start_via_fifo(tmp_path / "missing", timeout_s=1) is False
    d = tmp_path / "fd-y"
    d.mkdir()
    os.mkfifo(d / execfifo.FIFO_NAME)
    assert execfifo.start_via_fifo(d, timeout_s=1) is False  # no state.json: not runc's layout
    assert (d / execfifo.FIFO_NAME).exists()


def test_dead_init_is_an_error_not_a_hang(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    d = _state_dir(tmp_path, proc.pid)
    with pytest.raises(RuntimeFailure, match="already dead"):
        execfifo.start_via_fifo(d, timeout_s=30)
    assert (d / execfifo.FIFO_NAME).exists()  # not started: runc still reports it as created


def test_silent_init_times_out(tmp_path: Path) -> None:
    d = _state_dir(tmp_path, os.getpid())  # alive, never opens the fifo
    with pytest.raises(RuntimeFailure, match="timed out"):
        execfifo.start_via_fifo(d, timeout_s=0.3)
