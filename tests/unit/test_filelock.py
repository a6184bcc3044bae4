"""faasd.filelock: exclusive/shared, blocking/non-blocking flock on real files."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from faasd.filelock import flock, locked_file, open_lock_file


def _try(path: Path, *, shared: bool = False) -> bool:
    fd = open_lock_file(path)
    try:
        return flock(fd, shared=shared, blocking=False)
    finally:
        os.close(fd)


def test_exclusive_lock_excludes_everyone_until_released(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "x.lock"
    with locked_file(path) as fd:
        assert path.is_file() and path.stat().st_mode & 0o777 == 0o600 & ~_umask()
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert not _try(path)
        assert not _try(path, shared=True)
    assert _try(path)


def test_shared_locks_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    with locked_file(path, shared=True), locked_file(path, shared=True):
        assert _try(path, shared=True)
        assert not _try(path)
    assert _try(path)


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "e.lock"
    try:
        with locked_file(path):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert _try(path)


def test_blocking_lock_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "b.lock"
    order: list[str] = []
    holder = open_lock_file(path)
    assert flock(holder)
    started = threading.Event()

    def waiter() -> None:
        started.set()
        with locked_file(path):
            order.append("waiter")

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    order.append("holder")  # the waiter cannot get the lock before the holder closes its fd
    os.close(holder)
    t.join(30)
    assert order == ["holder", "waiter"]


def test_mode_is_applied_to_a_new_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    with locked_file(path, mode=0o644):
        pass
    assert path.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
