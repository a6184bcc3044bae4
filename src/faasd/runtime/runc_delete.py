"""Deleting a stopped runc container without a ``runc`` process.

For a container whose init has exited, ``runc delete`` (runc 1.1's ``destroy``) removes the container's
cgroup dirs, removes its record (``<root>/<id>/``) and runs its ``poststop`` hooks. Starting the runc
binary for that costs ~6 ms of a ~12 ms sandbox teardown on the 2-core host. :func:`remove_stopped` does the
same two removals itself, and only when it can tell, the way runc does, that the container is stopped:
its init process is gone, a zombie, or another process with the same pid (start time differs). Anything it
is not sure of (no record, an unreadable one, ``poststop`` hooks, Intel RDT, a container sharing a pid
namespace, a directory inside the record -- CRIU may have left its root mounted there --, a cgroup dir
that cannot be removed yet) answers False, and the caller runs ``runc delete`` as before.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from faasd.runtime import cgroups, procstat

STATE_FILE = "state.json"


def remove_stopped(state_dir: Path) -> bool:
    """Remove the stopped container recorded in ``state_dir`` (runc's ``<root>/<id>``) as ``runc delete``
    would: its cgroup dirs, then its record. False, changing nothing but possibly some empty cgroup dirs,
    when the container may not be stopped or runc's own delete is needed (see the module)."""
    record = _read_record(state_dir)
    if record is None or not _removable(record) or _init_alive(record) or not _flat(state_dir):
        return False
    paths = [Path(p) for p in record.get("cgroup_paths", {}).values() if p]
    for path in paths:
        if cgroups.remove_tree(path):
            return False  # still in use
    for entry in os.scandir(state_dir):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(state_dir)
    return True


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((state_dir / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _removable(record: dict[str, Any]) -> bool:
    """What runc's delete would do beyond removing cgroups and the record: nothing."""
    config = record.get("config")
    if not isinstance(config, dict) or not isinstance(record.get("cgroup_paths"), dict):
        return False
    hooks = config.get("hooks") or {}
    if not isinstance(hooks, dict) or hooks.get("poststop"):
        return False
    if config.get("intel_rdt") or record.get("intel_rdt_path"):
        return False
    # runc signals every process of the cgroups only when the container has no pid namespace of its own;
    # with one, the kernel killed them all when init exited
    own_pid_ns = any(
        isinstance(ns, dict) and ns.get("type") == "NEWPID" and not ns.get("path")
        for ns in config.get("namespaces") or []
    )
    return own_pid_ns and isinstance(record.get("init_process_pid"), int)


def _init_alive(record: dict[str, Any]) -> bool:
    """Whether the container's init still runs (runc's test: the pid exists, is not a zombie and has the
    recorded start time)."""
    pid = record["init_process_pid"]
    if pid <= 0:
        return False
    try:
        stat = procstat.read(pid)
    except FileNotFoundError:
        return False
    except (OSError, IndexError, ValueError):
        return True  # unreadable: not sure, so alive
    return not stat.ended and str(stat.start_ticks) == str(record.get("init_process_start"))


def _flat(state_dir: Path) -> bool:
    """Whether the record holds files only (nothing can be mounted in it then)."""
    try:
        with os.scandir(state_dir) as it:
            return not any(e.is_dir(follow_symlinks=False) for e in it)
    except OSError:
        return False
