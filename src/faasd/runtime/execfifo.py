"""Starting a created runc container without a ``runc start`` process.

``runc create`` leaves the container's init blocked on opening ``<runc root>/<id>/exec.fifo`` for writing;
``runc start`` only opens that FIFO for reading, reads the byte init writes, and removes the FIFO (runc
then reports the container as running: its state is derived from whether the FIFO exists). Doing the same
here saves a Go process per cold start (~7-10 ms of a ~80 ms start on the reference host). Anything
unexpected (no FIFO: not a created container, or another runtime's layout) is left to ``runc start``,
whose error messages the callers know.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from pathlib import Path

from faasd.errors import RuntimeFailure
from faasd.runtime import procstat

FIFO_NAME = "exec.fifo"
POLL_S = 0.1


def _dead(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (ended, not yet reaped)."""
    try:
        return procstat.read(pid).ended
    except OSError:
        return True


def start_via_fifo(state_dir: Path, timeout_s: float) -> bool:
    """Let the created container in ``state_dir`` (``<runc root>/<id>``) run its process. Returns False
    (nothing done) when there is no exec FIFO to open; raises RuntimeFailure when init died before it
    could be started or did not answer within ``timeout_s``. Blocking: call it from a thread."""
    fifo = state_dir / FIFO_NAME
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        try:
            pid = int(json.loads((state_dir / "state.json").read_text())["init_process_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False  # not runc's layout after all: let `runc start` handle it
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([fd], [], [], POLL_S)
            if ready:
                if not os.read(fd, 1):
                    raise RuntimeFailure(
                        f"cannot start container {state_dir.name}: its process is already dead"
                    )
                break
            if _dead(pid):
                raise RuntimeFailure(f"cannot start container {state_dir.name}: its process is already dead")
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"runc start of {state_dir.name} timed out after {timeout_s:g} s")
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        fifo.unlink()
    return True
