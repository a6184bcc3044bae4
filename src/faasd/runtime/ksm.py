"""Kernel samepage merging (KSM) for restored sandboxes.

Every copy restored from one snapshot starts with the same memory, but CRIU writes each copy's pages
into fresh anonymous memory, so ten copies cost ten times the memory. Since Linux 6.4 a process can
opt its whole address space into KSM (``prctl(PR_SET_MEMORY_MERGE, 1)``); the setting is inherited
across ``fork`` and (since 6.7) ``execve``. faasd's CRIU sets it on itself when started with
:data:`CRIU_ENV`, so the processes it restores all carry it (see ``/proc/<pid>/ksm_stat``:
``ksm_merge_any: yes``) and ``ksmd`` folds the pages the copies have not changed into one.

Merging happens only while ``ksmd`` runs (``/sys/kernel/mm/ksm/run`` = 1), a host-wide switch that
faasd does not flip by itself: :func:`configure` is for the operator (or the benchmark), and
:func:`host_stats` / :func:`process_stats` read the kernel's own counters.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

PR_GET_MEMORY_MERGE = 68
KSM_DIR = Path("/sys/kernel/mm/ksm")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def supported() -> bool:
    """Whether this kernel has per-process KSM (``PR_GET_MEMORY_MERGE`` answers) and KSM itself."""
    return _prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) >= 0 and (KSM_DIR / "run").exists()


CRIU_ENV = {"FAASD_KSM": "1"}
"""Environment that makes faasd's CRIU (patch ``scripts/criu-patches/0003-ksm-env.patch``) opt itself into
KSM before it restores anything: the restored processes, forked from it, inherit it. An environment
variable rather than a ``preexec_fn`` calling ``prctl``, which makes Python fork the daemon's whole
address space instead of using vfork (~4-5 ms per restore); runc passes its environment on to CRIU."""


@dataclass(frozen=True)
class KsmHost:
    """``/sys/kernel/mm/ksm`` counters (pages) and settings."""

    run: int
    pages_to_scan: int
    sleep_millisecs: int
    pages_shared: int
    pages_sharing: int
    full_scans: int

    @property
    def saved_bytes(self) -> int:
        """Memory KSM saves right now: every sharing page beyond the one kept."""
        return self.pages_sharing * os.sysconf("SC_PAGE_SIZE")


def _read_int(name: str) -> int:
    try:
        return int((KSM_DIR / name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def host_stats() -> KsmHost:
    return KsmHost(
        run=_read_int("run"), pages_to_scan=_read_int("pages_to_scan"),
        sleep_millisecs=_read_int("sleep_millisecs"), pages_shared=_read_int("pages_shared"),
        pages_sharing=_read_int("pages_sharing"), full_scans=_read_int("full_scans"),
    )


def configure(
    *, run: int | None = None, pages_to_scan: int | None = None, sleep_millisecs: int | None = None
) -> None:
    """Set host KSM knobs (root). ``run=1`` starts ``ksmd``; it only scans memory opted into KSM."""
    for name, value in (("pages_to_scan", pages_to_scan), ("sleep_millisecs", sleep_millisecs), ("run", run)):
        if value is not None:
            (KSM_DIR / name).write_text(str(int(value)))


def process_stats(pid: int) -> dict[str, int | bool]:
    """``/proc/<pid>/ksm_stat``: ``ksm_merging_pages``, ``ksm_merge_any`` ... ({} if unreadable)."""
    out: dict[str, int | bool] = {}
    try:
        text = Path(f"/proc/{pid}/ksm_stat").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        key, value = key.rstrip(":"), value.strip()
        if value in ("yes", "no"):
            out[key] = value == "yes"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                continue
    return out
