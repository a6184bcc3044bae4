"""setns(2)/unshare(2) via ctypes (Python 3.11 has no os.setns) and helpers to run code in a netns.

Namespaces are per *thread*: code here switches only the calling thread, always in a dedicated
worker thread, and switches back before the thread is reused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]

T = TypeVar("T")

# A small dedicated pool: threads that enter a namespace always leave it before finishing a task, and a
# thread that fails to switch back is poisoned (raises) so it never runs other code in a foreign netns.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="faasd-netns")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


class _BrokenThread(RuntimeError):
    pass


def call_in_netns(netns: Path | str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in the calling thread switched into ``netns``, then switch back. Blocking."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(str(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target, CLONE_NEWNET)
        try:
            return fn()
        finally:
            try:
                setns(own, CLONE_NEWNET)
            except OSError as exc:  # pragma: no cover - would leave the thread in the sandbox's netns
                raise _BrokenThread("could not return to the host network namespace") from exc
    finally:
        os.close(own)
        os.close(target)


async def run_in_netns(netns: Path | str, fn: Callable[[], T]) -> T:
    """Run ``fn`` inside ``netns`` on a dedicated thread (the event loop's thread never switches)."""
    import asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, call_in_netns, netns, fn)


def in_new_netns(fn: Callable[[], T]) -> T:
    """Unshare a fresh netns in the calling thread, run ``fn`` there, and switch back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNET)
        try:
            return fn()
        finally:
            setns(own, CLONE_NEWNET)
    finally:
        os.close(own)


def executor() -> ThreadPoolExecutor:
    return _executor
