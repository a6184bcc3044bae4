"""Idmapped mounts (``mount_setattr(MOUNT_ATTR_IDMAP)``) via ctypes: Python has no wrapper for them.

A sandbox with a user namespace sees container id ``k`` as host id ``host_id + k``. Its image layers are
shared by every sandbox and stay owned by the ids in the image (0 = root), so the sandbox gets
*idmapped* views of them: a detached clone of each directory (``open_tree(OPEN_TREE_CLONE)``) whose
ownership is shifted by ``host_id`` through a user namespace holding that mapping. The overlay is then
mounted over the shifted views (overlayfs accepts idmapped layers, lower and upper, since Linux 5.19),
and what the sandbox writes lands on disk with *unshifted* ids: its upper (what snapshots capture) looks
exactly like one written without a user namespace, and can be restored into any other range.

Overlayfs does all its upper-layer work (work dir, copy-up) with the credentials of the process that
mounted it; host root (fsuid 0) is not part of the idmapped upper's range (EOVERFLOW), so the overlay is
mounted by a thread whose fsuid/fsgid are the range's root (:func:`as_mounter`), keeping its capabilities.
An overlay mount itself cannot be idmapped (EINVAL), hence the per-layer views.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# x86_64 / aarch64 share these numbers (new mount API syscalls are the same on every arch)
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_SETFSUID = 122
_SYS_SETFSGID = 123
_SYS_CAPGET = 125
_SYS_CAPSET = 126
if os.uname().machine == "aarch64":  # generic syscall table
    _SYS_SETFSUID, _SYS_SETFSGID, _SYS_CAPGET, _SYS_CAPSET = 151, 152, 90, 91

OPEN_TREE_CLONE = 1
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x100000
_CAP_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


@dataclass(frozen=True)
class IdMap:
    """Container ids ``0..size-1`` are host ids ``host_id..``; ``userns``: a pinned user namespace with that
    mapping to reuse (else a throw-away one is made for each use)."""

    host_id: int
    size: int
    userns: Path | None = None

    def open_userns(self) -> int:
        if self.userns is not None:
            return os.open(self.userns, os.O_RDONLY | os.O_CLOEXEC)
        return userns_fd(self.host_id, self.size)


UNSHARE = "/usr/bin/unshare"
"""util-linux's unshare(1): the fallback helper that owns a new user namespace while we write its maps."""

_CLONE_NEWUSER = 0x10000000
_CLONE_VM = 0x00000100
_CHILD_STACK = 16 * 1024
_libc.clone.restype = ctypes.c_int
_libc.clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_PAUSE = ctypes.cast(_libc.pause, ctypes.c_void_p).value
"""libc's ``pause``: all the namespace holder runs (it shares our memory, never touches Python's)."""


def userns_fd(host_id: int, size: int) -> int:
    """An fd of a new user namespace mapping uids and gids ``0..size-1`` to ``host_id..``; close it after use.

    A holder task made by ``clone(CLONE_NEWUSER | CLONE_VM)`` that only runs libc's ``pause`` on a stack of
    ours (~0.2 ms; forking the daemon costs ~15-20 ms, exec'ing a helper ~2 ms) owns the namespace while
    we write its maps and open ``/proc/<pid>/ns/user``; then it is killed and reaped. The namespace lives on
    as long as the fd or a mount made with it. Where ``clone`` is refused, ``unshare --user sh`` does it.
    """
    stack = ctypes.create_string_buffer(_CHILD_STACK)
    top = (ctypes.addressof(stack) + _CHILD_STACK - 64) & ~0xF  # stacks grow down, 16-byte aligned
    pid = _libc.clone(_PAUSE, top, _CLONE_NEWUSER | _CLONE_VM | signal.SIGCHLD, None)
    if pid < 0:
        return _userns_fd_by_helper(host_id, size)
    try:
        return _map_and_open(pid, host_id, size)
    finally:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # a subreaper's reap of orphans may have got it
            os.waitpid(pid, 0)
        del stack  # only once the holder is gone: it ran on it


def _map_and_open(pid: int, host_id: int, size: int) -> int:
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 {host_id} {size}\n")
    return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)


def _userns_fd_by_helper(host_id: int, size: int) -> int:
    proc = subprocess.Popen(
        [UNSHARE, "--user", "--", "/bin/sh", "-c", "echo ready; read _"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline() != b"ready\n":
            raise OSError(f"could not create a user namespace for ids {host_id}..{host_id + size - 1}")
        return _map_and_open(proc.pid, host_id, size)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()


def idmapped_clone(path: Path | str, userns: int) -> int:
    """A detached, idmapped bind of ``path`` (not recursive): an fd usable as ``/proc/self/fd/N`` or with
    :func:`attach`. Raises OSError (EINVAL for filesystems without idmap support, e.g. overlayfs)."""
    fd = int(_libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, os.fsencode(str(path)), OPEN_TREE_CLONE | os.O_CLOEXEC))
    if fd < 0:
        _raise(f"open_tree {path}")
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns)
    size = ctypes.sizeof(attr)
    if _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), size) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"idmapped mount of {path}: {os.strerror(err)}")
    return fd


def attach(fd: int, target: Path | str) -> None:
    """Attach the detached mount ``fd`` at ``target`` (``move_mount``); the fd may be closed afterwards."""
    rc = _libc.syscall(_SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(str(target)), MOVE_MOUNT_F_EMPTY_PATH)
    if rc != 0:
        _raise(f"move_mount onto {target}")


def bind_idmapped(source: Path | str, target: Path | str, id_map: IdMap) -> None:
    """Bind ``source`` at ``target`` with ownership shifted into ``id_map``'s host range."""
    ns = id_map.open_userns()
    try:
        fd = idmapped_clone(source, ns)
    finally:
        os.close(ns)
    try:
        attach(fd, target)
    finally:
        os.close(fd)


def as_mounter(host_id: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in the calling thread with fsuid/fsgid ``host_id`` and all permitted capabilities effective.

    (setfsuid away from 0 clears the file capabilities from the effective set; they are raised again so
    that the mount keeps root's powers over the files, just under the range's root id.) Per thread only.
    """
    hdr = _CapHeader(_CAP_VERSION_3, 0)
    saved = (_CapData * 2)()
    if _libc.syscall(_SYS_CAPGET, ctypes.byref(hdr), saved) != 0:
        _raise("capget")
    _libc.syscall(_SYS_SETFSGID, host_id)
    _libc.syscall(_SYS_SETFSUID, host_id)
    try:
        raised = (_CapData * 2)()
        for i in range(2):
            raised[i].effective = saved[i].permitted
            raised[i].permitted = saved[i].permitted
            raised[i].inheritable = saved[i].inheritable
        if _libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), raised) != 0:
            _raise("capset")
        return fn()
    finally:
        _libc.syscall(_SYS_SETFSUID, os.getuid())
        _libc.syscall(_SYS_SETFSGID, os.getgid())
        with contextlib.suppress(OSError):
            if _libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), saved) != 0:
                _raise("capset")

