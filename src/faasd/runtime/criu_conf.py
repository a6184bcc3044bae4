"""The CRIU settings faasd applies to every checkpoint and restore it asks runc for.

runc hands CRIU a configuration file named by the ``org.criu.config`` annotation of the container's
config.json (its values override runc's RPC settings). faasd points it at :data:`CRIU_CONFIG`, a file
shipped with the package, so the settings apply per sandbox without touching ``/etc/criu``.

CRIU keeps its kernel-feature probe results (~30 ms of work per ``criu`` process: ``iptables -L``,
test mappings, netlink and ptrace probes) in ``<RUNDIR>/criu.kdat``, but only when that directory is on
a tmpfs (so that a reboot into another kernel drops it). Hosts with ``/run`` on disk would re-probe on
every dump and restore, so ``scripts/setup-system.sh`` builds CRIU with ``RUNDIR=`` :data:`KDAT_DIR`
and :func:`ensure_kdat_dir` mounts a small tmpfs there (once per host; it stays mounted, like
``/run/faasd-userns``). A CRIU built with the default ``/run`` simply ignores the directory.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from faasd.filelock import locked_file
from faasd.rootfs import mounts

CRIU_CONFIG_ANNOTATION = "org.criu.config"
CRIU_CONFIG = Path(__file__).with_name("criu.conf")

KDAT_DIR = Path("/run/faasd-criu")
"""CRIU's ``RUNDIR`` as built by ``scripts/setup-system.sh`` (keep the two in step)."""
KDAT_TMPFS_OPTIONS = "size=1m,nr_inodes=64,mode=0700"
TMPFS_MAGIC = 0x01021994

_libc = ctypes.CDLL(None, use_errno=True)


def criu_annotations() -> dict[str, str]:
    """The config.json annotations that make runc use faasd's CRIU settings."""
    return {CRIU_CONFIG_ANNOTATION: str(CRIU_CONFIG)}


def fs_type(path: Path) -> int:
    """``statfs(2)`` ``f_type`` of the filesystem holding ``path``."""
    buf = ctypes.create_string_buffer(256)  # struct statfs (120 bytes on 64-bit); f_type comes first
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def is_tmpfs(path: Path) -> bool:
    try:
        return fs_type(path) == TMPFS_MAGIC
    except OSError:
        return False


def ensure_kdat_dir(kdat_dir: Path = KDAT_DIR) -> bool:
    """Make ``kdat_dir`` a directory on a tmpfs, mounting a small one if it is not (serialised host-wide
    by a lock file next to it). Returns whether CRIU can keep its kdat cache there; failures only cost
    the cache, never the checkpoint or restore."""
    if is_tmpfs(kdat_dir):
        return True
    try:
        with locked_file(kdat_dir.parent / f".{kdat_dir.name}.lock"):
            if is_tmpfs(kdat_dir):
                return True
            kdat_dir.mkdir(mode=0o700, exist_ok=True)
            if is_tmpfs(kdat_dir):  # /run is a tmpfs here: the directory is enough
                return True
            flags = mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC
            mounts.mount("faasd-criu", kdat_dir, "tmpfs", flags, KDAT_TMPFS_OPTIONS)
    except OSError:
        return False
    return is_tmpfs(kdat_dir)
