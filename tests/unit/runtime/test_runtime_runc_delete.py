"""Removing a stopped runc container without runc: only when runc's own delete would do the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faasd.runtime.runc_delete import remove_stopped

pytestmark = pytest.mark.unit


def _start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def _exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(tmp_path: Path, *, pid: int, start: int = 1, **config: Any) -> tuple[Path, list[Path]]:
    """A runc record in ``tmp_path/root/c1`` with two (plain dir) cgroup paths, one with a child."""
    cgroups = [tmp_path / "cg" / "memory" / "faasd" / "c1", tmp_path / "cg" / "pids" / "faasd" / "c1"]
    for cg in cgroups:
        cg.mkdir(parents=True)
    (cgroups[0] / "child").mkdir()
    state_dir = tmp_path / "root" / "c1"
    state_dir.mkdir(parents=True)
    record = {
        "id": "c1",
        "init_process_pid": pid,
        "init_process_start": start,
        "cgroup_paths": {"memory": str(cgroups[0]), "pids": str(cgroups[1]), "cpu": ""},
        "intel_rdt_path": "",
        "config": {"namespaces": [{"type": "NEWPID", "path": ""}, {"type": "NEWNS", "path": ""}], **config},
    }
    (state_dir / "state.json").write_text(json.dumps(record))
    return state_dir, cgroups


def test_a_stopped_container_loses_its_cgroups_and_record(tmp_path: Path) -> None:
    state_dir, cgroups = _record(tmp_path, pid=_exited_pid())
    assert remove_stopped(state_dir)
    assert not state_dir.exists()
    assert not any(cg.exists() for cg in cgroups)


def test_a_pid_reused_by_another_process_counts_as_stopped(tmp_path: Path) -> None:
    state_dir, _ = _record(tmp_path, pid=os.getpid(), start=_start_time(os.getpid()) + 1)
    assert remove_stopped(state_dir)
    assert not state_dir.exists()


@pytest.mark.parametrize(
    "change",
    ["running", "poststop", "rdt", "shared pid ns", "dir in record", "no record", "bad record"],
)
def test_anything_not_sure_is_left_to_runc(tmp_path: Path, change: str) -> None:
    pid, start, config = _exited_pid(), 1, {}
    if change == "running":
        pid, start = os.getpid(), _start_time(os.getpid())
    elif change == "poststop":
        config = {"hooks": {"poststop": [{"path": "/bin/true"}]}}
    elif change == "rdt":
        config = {"intel_rdt": {"l3_cache_schema": "L3:0=f"}}
    elif change == "shared pid ns":
        config = {"namespaces": [{"type": "NEWPID", "path": "/proc/1/ns/pid"}]}
    state_dir, cgroups = _record(tmp_path, pid=pid, start=start, **config)
    if change == "dir in record":
        (state_dir / "criu-root").mkdir()
    elif change == "no record":
        (state_dir / "state.json").unlink()
    elif change == "bad record":
        (state_dir / "state.json").write_text("[1, 2")
    before = sorted(p.name for p in state_dir.iterdir())
    assert not remove_stopped(state_dir)
    assert sorted(p.name for p in state_dir.iterdir()) == before
    assert all(cg.is_dir() for cg in cgroups)


def test_a_cgroup_still_in_use_leaves_the_record_for_runc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir, cgroups = _record(tmp_path, pid=_exited_pid())
    (cgroups[1] / "cgroup.procs").write_text(
        "1\n"
    )  # a plain dir with a file: rmdir fails as on a busy cgroup
    assert not remove_stopped(state_dir)
    assert (state_dir / "state.json").exists()
    assert cgroups[1].is_dir()
