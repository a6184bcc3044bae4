"""The cgroup2 hierarchy mounted with ``favordynmods``: finding the mount, remounting it once, and a
host that refuses (logged, sandboxes work on). The real host: tests/integration/runtime."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from faasd.runtime import SandboxManager, cgroup_moves

pytestmark = pytest.mark.unit

HYBRID = """\
24 1 0:21 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
25 24 0:22 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 24 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw{extra}
"""
V2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"


def test_the_cgroup2_mount_is_found_with_its_options() -> None:
    assert cgroup_moves.cgroup2_mount(HYBRID.format(extra="")) == (Path("/sys/fs/cgroup/unified"), ["rw"])
    assert cgroup_moves.cgroup2_mount(V2) == (
        Path("/sys/fs/cgroup"),
        ["rw", "nsdelegate", "memory_recursiveprot"],
    )
    assert cgroup_moves.cgroup2_mount(HYBRID.splitlines()[1]) is None  # v1 only


class _Host:
    """/proc/self/mountinfo and mount(8) of a pretend host."""

    def __init__(self, on: bool, accepts: bool) -> None:
        self.on, self.accepts, self.calls = on, accepts, []  # type: list[list[str]]

    def mountinfo(self) -> str:
        return HYBRID.format(extra=",favordynmods" if self.on else "")

    def run(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if self.accepts:
            self.on = True
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.CompletedProcess(argv, 32, "", "mount: permission denied")


@pytest.mark.parametrize(
    ("on", "accepts", "result", "mounts"),
    [
        (True, True, True, 0),  # already on: nothing to do
        (False, True, True, 1),  # remounted once
        (False, False, False, 1),  # refused: logged, False
    ],
)
def test_favor_dynamic_moves(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    on: bool,
    accepts: bool,
    result: bool,
    mounts: int,
) -> None:
    host = _Host(on, accepts)
    monkeypatch.setattr(cgroup_moves, "_mountinfo", host.mountinfo)
    monkeypatch.setattr(cgroup_moves.subprocess, "run", host.run)
    cgroup_moves.favor_dynamic_moves.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=cgroup_moves.__name__):
            assert cgroup_moves.favor_dynamic_moves() is result
            assert cgroup_moves.favor_dynamic_moves() is result  # once per process
    finally:
        cgroup_moves.favor_dynamic_moves.cache_clear()
    assert host.calls == [["mount", "-o", "remount,favordynmods", "/sys/fs/cgroup/unified"]] * mounts
    assert ("could not remount" in caplog.text) is (not result)


def test_the_manager_turns_it_on_unless_told_not_to(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(cgroup_moves, "favor_dynamic_moves", lambda: calls.append(True) or True)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    SandboxManager(Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r"))
    assert calls == [True]
    SandboxManager(Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cgroup_favordynmods=False))
    assert calls == [True]
