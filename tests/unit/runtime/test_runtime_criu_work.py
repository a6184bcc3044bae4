"""CRIU work dirs: a live operation's dir is never taken for a crash's leftover."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.runtime import criu_work
from faasd.runtime.criu_work import RESTORE_WORK_DIR, make_work_dir, remove_stale_work_dirs, remove_work_dir

pytestmark = pytest.mark.unit


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    run_dir, sandboxes = tmp_path / "run", tmp_path / "run" / "sandboxes"
    sandboxes.mkdir(parents=True)
    return run_dir, sandboxes


def test_a_locked_work_dir_is_kept_and_an_unlocked_one_removed(tmp_path: Path) -> None:
    run_dir, sandboxes = _dirs(tmp_path)
    live = run_dir / RESTORE_WORK_DIR / "fd-live-1"
    fd = make_work_dir(live)
    (live / "restore.log").write_text("x")
    stale = run_dir / RESTORE_WORK_DIR / "fd-stale-1"
    stale.mkdir()
    (stale / "restore.log").write_text("y")
    try:
        assert remove_stale_work_dirs(run_dir, sandboxes) == [stale]
        assert live.is_dir() and not stale.exists()
    finally:
        remove_work_dir(live, fd)


def test_a_dir_its_owner_removes_while_the_sweep_opens_it_is_not_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner finishes (removes its dir, releases the lock) between the sweep's open and its flock:
    the sweep must not count that dir as a crash's leftover it removed."""
    run_dir, sandboxes = _dirs(tmp_path)
    work = run_dir / RESTORE_WORK_DIR / "fd-racing-1"
    owner_fd = make_work_dir(work)
    (work / "restore.log").write_text("x")
    real_flock = criu_work.flock

    def owner_finishes_first(fd: int, blocking: bool = True) -> bool:
        if not blocking and work.exists():
            remove_work_dir(work, owner_fd)
        return real_flock(fd, blocking=blocking)

    monkeypatch.setattr(criu_work, "flock", owner_finishes_first)
    assert remove_stale_work_dirs(run_dir, sandboxes) == []
    assert not work.exists()


def test_a_dir_replaced_under_its_name_is_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner removed its dir and a new operation made one of the same name (locked): the sweep's fd
    is of the old dir, so it leaves the new one alone."""
    run_dir, sandboxes = _dirs(tmp_path)
    work = run_dir / RESTORE_WORK_DIR / "fd-reused-1"
    first_fd = make_work_dir(work)
    fds: list[int] = []
    real_flock = criu_work.flock

    def replaced_meanwhile(fd: int, blocking: bool = True) -> bool:
        if not blocking and not fds:
            remove_work_dir(work, first_fd)
            work.mkdir()  # a same-named dir, not locked by the fd the sweep holds
            fds.append(fd)
        return real_flock(fd, blocking=blocking)

    monkeypatch.setattr(criu_work, "flock", replaced_meanwhile)
    assert remove_stale_work_dirs(run_dir, sandboxes) == []
    assert work.is_dir()
