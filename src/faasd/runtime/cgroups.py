"""Host-side view of sandbox cgroups (``/faasd/<id>``) on v1, v2 and hybrid hosts.

runc creates and configures them from config.json; we read counters (OOM kills, usage), and remove
the directories in *every* hierarchy on cleanup (runc leaves some behind when killed mid-way).
"""

from __future__ import annotations

import contextlib
import os
import time
from functools import lru_cache
from pathlib import Path

from faasd.rootfs import mounts

PARENT = "faasd"


@lru_cache(maxsize=1)
def hierarchies() -> tuple[tuple[str, Path], ...]:
    """(kind, mount point) for every cgroup hierarchy: kind is the v1 controller list or ``unified``."""
    found: list[tuple[str, Path]] = []
    for e in mounts.mount_table():
        if e.fstype == "cgroup2":
            found.append(("unified", Path(e.point)))
        elif e.fstype == "cgroup":
            ctrls = [
                o
                for o in e.options
                if o not in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec", "clone_children")
            ]
            found.append((",".join(ctrls), Path(e.point)))
    # de-duplicate (bind mounts of the same hierarchy)
    seen: set[str] = set()
    unique = []
    for kind, mnt in found:
        if kind not in seen:
            seen.add(kind)
            unique.append((kind, mnt))
    return tuple(unique)


def _mount_of(controller: str) -> Path | None:
    for kind, mnt in hierarchies():
        if controller in kind.split(","):
            return mnt
    return None


def is_v2_only() -> bool:
    return all(kind == "unified" for kind, _ in hierarchies())


def dirs(sandbox_id: str) -> list[Path]:
    """Existing cgroup dirs of ``sandbox_id`` in every hierarchy."""
    out = []
    for _, mnt in hierarchies():
        p = mnt / PARENT / sandbox_id
        if p.is_dir():
            out.append(p)
    return out


def controller_dir(sandbox_id: str, controller: str) -> Path | None:
    """Dir of ``sandbox_id`` for a v1 controller (``memory``, ``cpu``, ``pids``…), or the v2 dir."""
    mnt = _mount_of(controller)
    if mnt is None:
        mnt = _mount_of("unified")
    return mnt / PARENT / sandbox_id if mnt is not None else None


def read(sandbox_id: str, controller: str, name: str) -> str | None:
    d = controller_dir(sandbox_id, controller)
    if d is None:
        return None
    try:
        return (d / name).read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[k] = int(v)
    return out


OOM_COUNTER_FILES = ("memory.oom_control", "memory.events")
"""Where the memory cgroup counts OOM kills (``oom_kill N``): v1 (kernel >= 4.13), then v2."""


def oom_kills(sandbox_id: str) -> int:
    """How many processes the kernel OOM-killed in the sandbox's memory cgroup (0 if unknown)."""
    for name in OOM_COUNTER_FILES:
        counters = _kv(read(sandbox_id, "memory", name))
        if "oom_kill" in counters:
            return counters["oom_kill"]
    return 0


class _CounterFile:
    """One ``key N`` counter of a sandbox's cgroup, re-read cheaply (for polling while a request runs).

    Keeps the counter file open and re-reads it with ``pread`` at offset 0 (a cgroup file is regenerated
    on every read): ~2 us instead of ~50-150 us for path lookup + open + read + close. Falls back to a
    plain read when the file cannot be opened or read. :meth:`close` releases the descriptor.
    """

    controller = ""
    files: tuple[str, ...] = ()
    key = ""

    def __init__(self, sandbox_id: str) -> None:
        self.sandbox_id = sandbox_id
        self._fd: int | None = None
        self._opened = False
        self._closed = False

    def _fallback(self) -> int:
        for name in self.files:
            counters = _kv(read(self.sandbox_id, self.controller, name))
            if self.key in counters:
                return counters[self.key]
        return 0

    def _open(self) -> None:
        self._opened = True
        d = controller_dir(self.sandbox_id, self.controller)
        if d is None:
            return
        for name in self.files:
            try:
                fd = os.open(d / name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if self.key in _kv(os.pread(fd, 4096, 0).decode()):
                    self._fd = fd
                    return
            except OSError:
                pass
            os.close(fd)

    def read(self) -> int:
        if not self._closed and not self._opened:
            self._open()
        if self._closed or self._fd is None:
            return self._fallback()
        try:
            data = os.pread(self._fd, 4096, 0)
        except OSError:  # the cgroup went away: no descriptor to keep
            self.close()
            return self._fallback()
        return _kv(data.decode()).get(self.key, 0)

    def close(self) -> None:
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class OomCounter(_CounterFile):
    """:func:`oom_kills` for one sandbox, for reading before every request of a warm worker."""

    controller = "memory"
    files = OOM_COUNTER_FILES
    key = "oom_kill"


PIDS_EVENTS_FILE = "pids.events"
"""``max N``: how often a fork/clone failed because of the pids limit. The v1 pids controller (hybrid
hosts mount it under ``/sys/fs/cgroup/pids``) and v2 both have it; :func:`controller_dir` picks the
hierarchy that holds the pids controller."""


class PidsCounter(_CounterFile):
    """:func:`pids_events_max` for one sandbox, cheap enough to poll every few ms while a request runs."""

    controller = "pids"
    files = (PIDS_EVENTS_FILE,)
    key = "max"


def pids_events_max(sandbox_id: str) -> int:
    """How often a fork failed because of the sandbox's pids limit (``pids.events``, v1 or v2; 0 if
    unknown)."""
    return _kv(read(sandbox_id, "pids", PIDS_EVENTS_FILE)).get("max", 0)


def procs(sandbox_id: str) -> list[int]:
    pids: set[int] = set()
    for d in dirs(sandbox_id):
        for sub, _, _ in os.walk(d):
            with contextlib.suppress(OSError), open(os.path.join(sub, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
    return sorted(pids)


def remove_tree(path: Path) -> list[Path]:
    """Remove the cgroup dir ``path`` and every dir below it, children first; returns those still in use
    (a task in them). A dir already gone counts as removed."""
    left = []
    for sub in sorted((Path(s) for s, _, _ in os.walk(path)), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(sub)
    return left


def remove(sandbox_id: str, *, timeout_s: float = 2.0) -> list[Path]:
    """Remove the sandbox's cgroup dirs everywhere (children first), killing stragglers.

    Returns the dirs that could not be removed (empty on success).
    """
    deadline = time.monotonic() + timeout_s
    left: list[Path] = []
    while True:
        left = [sub for d in dirs(sandbox_id) for sub in remove_tree(d)]
        if not left or time.monotonic() > deadline:
            return left
        # a frozen cgroup cannot be emptied: thaw it; then kill what is left
        thaw = controller_dir(sandbox_id, "freezer")
        if thaw is not None:
            with contextlib.suppress(OSError):
                (thaw / "freezer.state").write_text("THAWED")
        for pid in procs(sandbox_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)
        time.sleep(0.02)


def list_ids(prefix: str = "fd-") -> set[str]:
    ids: set[str] = set()
    for _, mnt in hierarchies():
        parent = mnt / PARENT
        with contextlib.suppress(OSError):
            ids.update(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return ids
