"""On this host, the cgroup2 hierarchy carries ``favordynmods`` once a sandbox manager started
(``faasd.runtime.cgroup_moves``; the switch stays on until reboot, so only a fresh boot shows the remount)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import SandboxManager, cgroup_moves

pytestmark = pytest.mark.integration


@pytest.mark.skipif(os.geteuid() != 0, reason="remounting cgroupfs needs root")
def test_the_option_is_on_after_a_manager_started(tmp_path: Path) -> None:
    if cgroup_moves.cgroup2_mount(Path("/proc/self/mountinfo").read_text()) is None:
        pytest.skip("this host has no cgroup2 hierarchy")
    SandboxManager(Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r"))
    found = cgroup_moves.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    assert found is not None and "favordynmods" in found[1]
