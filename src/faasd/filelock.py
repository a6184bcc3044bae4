"""File locks (``flock``), the one helper every layer uses.

``flock`` locks belong to an open file description: they are released when its last fd is closed
(also when the process dies), and two ``open`` calls of the same file conflict even in one process.
Lock files are opened close-on-exec, so a child process (runc, CRIU, mkfs) never inherits a lock.
No faasd imports: this module sits below every layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def flock(fd: int, *, shared: bool = False, blocking: bool = True) -> bool:
    """Lock ``fd`` exclusively (or ``shared``). Blocking: wait for the lock, return True.
    Non-blocking: return False at once when another holder has a conflicting lock."""
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if not blocking:
        op |= fcntl.LOCK_NB
    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        return False
    return True


def open_lock_file(path: str | Path, mode: int = 0o600) -> int:
    """An fd of ``path`` (created with ``mode`` if missing; read-write, close-on-exec) to :func:`flock`."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)


@contextlib.contextmanager
def locked_file(path: str | Path, *, shared: bool = False, mode: int = 0o600) -> Iterator[int]:
    """Hold a blocking ``flock`` of ``path`` (created with its parent dirs if missing) for the block;
    yields the fd. The lock is released when the block exits, whatever happens."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path, mode)
    try:
        flock(fd, shared=shared)
        yield fd
    finally:
        os.close(fd)


__all__ = ["flock", "locked_file", "open_lock_file"]
