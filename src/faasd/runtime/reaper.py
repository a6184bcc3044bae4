"""Exit statuses of container init processes.

``runc create`` exits once the container is set up, so the container's init is re-parented. We make
this process a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER) so that it is re-parented to us, and
wait for it with a pidfd on the event loop; that gives the real exit code / signal without polling
``runc state``. Processes restored by ``runc restore --detach`` are re-parented to us the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal as _signal
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_enabled = False


def enable_subreaper() -> None:
    global _enabled
    if _enabled:
        return
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")
    _enabled = True


@dataclass(frozen=True)
class ProcExit:
    exit_code: int
    """exit code, or 128+signal"""
    signal: int | None
    reaped: bool
    """False when the pid was not our child (status unknown: exit_code is -1)."""


def _decode(status: int) -> ProcExit:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ProcExit(128 + sig, sig, True)
    return ProcExit(os.WEXITSTATUS(status), None, True)


def try_reap(pid: int) -> ProcExit | None:
    """Non-blocking: the exit of ``pid`` if it has ended (None if still running)."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return ProcExit(-1, None, False) if not _alive(pid) else None
    if got == 0:
        return None
    return _decode(status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def wait_pid(pid: int) -> ProcExit:
    """Wait for ``pid`` to exit without blocking the loop (pidfd readiness) and reap it."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        res = try_reap(pid)
        return res if res is not None else ProcExit(-1, None, False)
    try:
        exited = False
        while True:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                if exited or not _alive(pid):
                    return ProcExit(-1, None, False)
            else:
                if got != 0:
                    return _decode(status)
            fut: asyncio.Future[None] = loop.create_future()

            def ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(pidfd, ready)
            try:
                await fut
            finally:
                loop.remove_reader(pidfd)
            exited = True  # a pidfd is readable once the process has terminated
    finally:
        os.close(pidfd)


def kill(pid: int, sig: int = _signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _children() -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    return pids


def reap_orphans(exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Reap zombie children that came from inside a container (nested pid namespace) and nobody waits for.

    As subreaper we inherit e.g. processes of a killed ``runc exec``; while such a zombie exists, the
    container's init cannot finish exiting (it waits in zap_pid_ns_processes). Host-namespace children
    (our own subprocesses, awaited by asyncio) are never touched.
    """
    reaped = []
    for pid in _children():
        if pid in exclude:
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
        nspid = next((ln for ln in status.splitlines() if ln.startswith("NSpid:")), "")
        if "Z" in state.split()[1:2] and len(nspid.split()) > 2:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
    return reaped


def children_with_arg(arg: str) -> list[int]:
    """Live children whose command line contains ``arg`` (e.g. gVisor's gofer/sandbox of one container)."""
    out = []
    needle = arg.encode()
    for pid in _children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    out.append(pid)
        except OSError:
            continue
    return out
