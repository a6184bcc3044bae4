"""``/proc/<pid>/stat`` read right even when the command name holds spaces and parentheses."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from faasd.runtime import procstat

pytestmark = pytest.mark.unit


def test_a_live_process_whose_name_holds_spaces_and_parens(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        st = procstat.read(proc.pid)
        assert st.state in ("R", "S") and not st.ended
        uptime_ticks = float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")
        assert 0 < st.start_ticks <= uptime_ticks + 1
        assert procstat.read(proc.pid).start_ticks == st.start_ticks
    finally:
        proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert procstat.read(proc.pid).ended
    proc.wait()
    with pytest.raises(FileNotFoundError):
        procstat.read(proc.pid)
