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

import contextlib
import ctypes
import functools
import os
from pathlib import Path

from faasd.filelock import locked_file
from faasd.rootfs import mounts
from faasd.runtime import cgroups

CRIU_CONFIG_ANNOTATION = "org.criu.config"
CRIU_CONFIG = Path(__file__).with_name("criu.conf")
CRIU_CONFIG_YARD = Path(__file__).with_name("criu-yard.conf")
""":data:`CRIU_CONFIG` plus ``cgroup-yard`` = :func:`cgroup_yard` (the path is fixed: ``KDAT_DIR/cgyard``)."""

KDAT_DIR = Path("/run/faasd-criu")
"""CRIU's ``RUNDIR`` as built by ``scripts/setup-system.sh`` (keep the two in step)."""
KDAT_TMPFS_OPTIONS = "size=1m,nr_inodes=64,mode=0700"
TMPFS_MAGIC = 0x01021994

_libc = ctypes.CDLL(None, use_errno=True)


def criu_annotations() -> dict[str, str]:
    """The config.json annotations that make runc use faasd's CRIU settings (the sandbox manager switches
    to :func:`config_file`'s choice when it writes the config)."""
    return {CRIU_CONFIG_ANNOTATION: str(CRIU_CONFIG)}


@functools.cache
def config_file() -> Path:
    """The CRIU config file for a sandbox of this host: with the cgroup yard when the host has one. Decided
    once per process (it is asked on every sandbox start); every dump and restore makes the yard again
    with :func:`cgroup_yard` should it have gone meanwhile."""
    return CRIU_CONFIG_YARD if cgroup_yard() is not None else CRIU_CONFIG


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


CGROUP_YARD_NAME = "cgyard"
_made_yard: Path | None = None
"""The yard :func:`cgroup_yard` last made complete in this process."""


def _yard_name(controllers: str) -> str:
    """CRIU's name of a hierarchy's directory in its cgroup yard (``ctrl_dir_and_opt`` in criu/cgroup.c):
    the controllers joined by commas, ``name=`` dropped, ``unified`` for the v2 hierarchy."""
    if not controllers:
        return "unified"
    return ",".join(c[5:] if c.startswith("name=") else c for c in controllers.split(","))


def _hierarchy_mount(controllers: str) -> Path | None:
    """Where the hierarchy of ``controllers`` (a ``/proc/self/cgroup`` field, empty for v2) is mounted."""
    wanted = set(controllers.split(","))
    for kind, mnt in cgroups.hierarchies():
        if (kind == "unified") if not controllers else wanted <= set(kind.split(",")):
            return mnt
    return None


def cgroup_yard(kdat_dir: Path = KDAT_DIR) -> Path | None:
    """A CRIU cgroup yard made of symlinks to this host's mounted hierarchies (CRIU's ``--cgroup-yard``,
    for dumps and restores), or None when one hierarchy is not found mounted. Called before every dump
    and restore (cheap: a yard removed meanwhile is made again).

    Without it CRIU mounts every hierarchy into a fresh yard on each restore, and mounting the cgroup2
    one costs an RCU grace period (~12 ms measured here); with it CRIU mounts nothing.

    Once made, a yard is only checked to be still there (its links are to mounts of the boot's
    hierarchies: reading the host's mount table again cost ~0.9 ms per restore)."""
    global _made_yard
    yard = kdat_dir / CGROUP_YARD_NAME
    if _made_yard == yard and is_tmpfs(kdat_dir) and yard.is_dir():
        return yard
    if not ensure_kdat_dir(kdat_dir):
        return None
    try:
        yard.mkdir(mode=0o700, exist_ok=True)
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
        for _, controllers, _ in lines:
            mnt = _hierarchy_mount(controllers)
            if mnt is None:
                return None
            link = yard / _yard_name(controllers)
            if os.path.realpath(link) != os.path.realpath(mnt):
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(mnt)
    except OSError:
        return None
    _made_yard = yard
    return yard
