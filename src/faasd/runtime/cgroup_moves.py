"""Fast task moves between cgroups: the host's cgroup2 hierarchy mounted with ``favordynmods``.

Every sandbox start (``runc create``) and every restore (CRIU) moves a task into the sandbox's cgroups by
writing its pid to ``cgroup.procs``. By default the kernel guards such moves with one global per-CPU
rw-semaphore whose writer waits for an RCU grace period: measured here (kernel 6.18, 250 Hz, hybrid
cgroups) ~13 ms for moving one task into five v1 cgroups, 0.5-0.9 ms with ``favordynmods`` (from 6.18 on
the kernel then uses a semaphore per thread group for these writes, and the switch stays on until reboot).
CRIU's restore log showed the same 13.4 ms inside its ``userns_move`` call. The option is the kernel's own
knob for hosts that move tasks often (kernel docs, cgroup-v2: "favordynmods"); its cost is on forks and
exits, slightly slower while it is on. ``Settings.cgroup_favordynmods`` (default on) makes the sandbox
manager turn it on once per process: a remount of the cgroup2 hierarchy that keeps its other options.
"""

from __future__ import annotations

import logging
import subprocess
from functools import lru_cache
from pathlib import Path

from faasd.rootfs import mounts

log = logging.getLogger(__name__)
OPTION = "favordynmods"


def cgroup2_mount(mountinfo: str) -> tuple[Path, list[str]] | None:
    """The host's cgroup2 mount point and its super options, from ``/proc/self/mountinfo`` text (pure)."""
    for e in mounts.parse_mountinfo(mountinfo):
        if e.fstype == "cgroup2":
            return Path(e.point), list(e.options)
    return None


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


@lru_cache(maxsize=1)
def favor_dynamic_moves() -> bool:
    """Make sure the cgroup2 hierarchy is mounted with ``favordynmods``; True when it is (now or already).

    False, with one log line, when the host has no cgroup2 mount, the kernel lacks the option (< 6.0) or
    the remount is refused (e.g. a read-only cgroupfs inside a container): sandboxes work the same, moves
    are only slower."""
    found = cgroup2_mount(_mountinfo())
    if found is None:
        log.info("no cgroup2 hierarchy: cgroup moves keep the kernel's default locking")
        return False
    point, options = found
    if OPTION in options:
        return True
    done = subprocess.run(
        ["mount", "-o", f"remount,{OPTION}", str(point)], capture_output=True, text=True, check=False
    )
    mounted = cgroup2_mount(_mountinfo())
    if done.returncode != 0 or mounted is None or OPTION not in mounted[1]:
        log.warning(
            "could not remount %s with %s (%s): each sandbox start and restore may wait ~10 ms more on "
            "moving its task into its cgroups",
            point,
            OPTION,
            (done.stderr or "").strip() or "not applied",
        )
        return False
    log.info("remounted %s with %s: cgroup moves no longer wait for an RCU grace period", point, OPTION)
    return True
