"""OCI runtime spec (config.json) generation for runc 1.1.

Choices (documented here because every sandbox inherits them):

* Namespaces: pid, mount, ipc, uts, cgroup, and network by *path* (``/run/netns/fd-<id>``, created by
  :mod:`faasd.runtime.network`) so the netns outlives the container and CRIU restore can rejoin it.
* Root: the overlay's merged dir, **writable** (``root.readonly=false``); the writable layer is the
  overlay upper on a size-bounded filesystem (``Limits.disk_mb``), which is also what snapshots capture.
  ``SandboxSpec.readonly_rootfs=True`` makes the root read-only (writes then only go to /tmp and mounts).
* /tmp and /dev/shm: size-limited tmpfs (their pages are charged to the container's memory cgroup).
* /dev: minimal tmpfs; runc adds null, zero, full, random, urandom, tty, ptmx; all other devices denied.
* /sys read-only, /sys/fs/cgroup read-only; runc's default masked and read-only /proc paths.
* Capabilities: Docker's default set minus NET_RAW for uid 0; none at all for other users.
  ``noNewPrivileges`` always.
* seccomp: ``seccomp_default.json`` (default allow; EPERM for mount/namespaces/modules/bpf/ptrace/keys/
  clock/swap/reboot/…, clone with CLONE_NEW* flags, mknod of devices; ENOSYS for clone3 so libc falls
  back to the filterable clone). fork/exec/threads (the Python agent's zygote) are unaffected; CRIU
  runs on the host and restores the filter itself.
* cgroups: ``cgroupsPath=/faasd/<id>``; memory with memsw = memory + swap_mb (no swap beyond by
  default), cpu quota/period + shares, pids.
* User namespace (``userns``, a :class:`~faasd.runtime.models.UserNamespace`): a ``user`` namespace with
  ``linux.uidMappings``/``gidMappings`` mapping container ids 0..65535 onto the sandbox's host range. runc
  1.1 cannot idmap mounts itself, so the root and every bind source are already idmapped views made by
  the sandbox manager (``paths.rootfs``, ``paths.bind_sources``). The netns is then a new one (no path:
  runc makes it inside the user namespace, so ``runc exec`` can join both and sysfs can be mounted; the
  manager pins it afterwards); runc bind-mounts the /dev nodes instead of mknod-ing them.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from faasd.errors import InvalidInputError
from faasd.runtime.criu_conf import criu_annotations
from faasd.runtime.models import IO_DIR_IN_CONTAINER, BindMount, Limits, SandboxSpec, UserNamespace

OCI_VERSION = "1.0.2-dev"
CPU_PERIOD_US = 100_000
MIB = 1024 * 1024

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
"""Docker's default capability set without CAP_NET_RAW."""

MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class ProcessUser:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/"

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass
class ContainerPaths:
    """Host paths the spec refers to."""

    rootfs: Path
    io_dir: Path
    netns: Path | None
    extra_mounts: list[BindMount] = field(default_factory=list)
    bind_sources: dict[str, Path] = field(default_factory=dict)
    """Per mount destination: the host path runc binds instead of the mount's own source (the idmapped view
    of it that a sandbox with a user namespace needs)."""


@lru_cache(maxsize=1)
def _seccomp_profile() -> dict[str, Any]:
    text = resources.files("faasd.runtime").joinpath("seccomp_default.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def default_seccomp() -> dict[str, Any]:
    """A fresh copy of the default seccomp profile (OCI ``linux.seccomp``)."""
    return copy.deepcopy(_seccomp_profile())


def cgroups_path(sandbox_id: str) -> str:
    return f"/faasd/{sandbox_id}"


def resources_for(limits: Limits) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if limits.memory_mb is not None:
        mem = limits.memory_mb * MIB
        res["memory"] = {"limit": mem, "swap": mem + limits.swap_mb * MIB, "disableOOMKiller": False}
    cpu: dict[str, Any] = {"shares": limits.cpu_shares}
    if limits.cpu_cores is not None:
        cpu["quota"] = int(limits.cpu_cores * CPU_PERIOD_US)
        cpu["period"] = CPU_PERIOD_US
    res["cpu"] = cpu
    if limits.pids is not None:
        res["pids"] = {"limit": limits.pids}
    return res


def capabilities_for(user: ProcessUser) -> dict[str, list[str]]:
    caps = list(DEFAULT_CAPS) if user.is_root else []
    return {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []}


def _bind(source: Path | str, target: str, readonly: bool, keep_locked: bool = False) -> dict[str, Any]:
    """``keep_locked``: also repeat the source's noexec/ro (under a user namespace these flags are locked:
    runc 1.1's remount without them fails with EPERM)."""
    opts = ["rbind", "nosuid", "nodev", "ro" if readonly else "rw"]
    if keep_locked:
        try:
            flags = os.statvfs(source).f_flag
        except OSError:
            flags = 0
        if flags & os.ST_NOEXEC:
            opts.append("noexec")
        if flags & os.ST_RDONLY and not readonly:
            opts[3] = "ro"
    return {"destination": target, "type": "bind", "source": str(source), "options": opts}


def mounts_for(
    spec: SandboxSpec, paths: ContainerPaths, userns: UserNamespace | None = None
) -> list[dict[str, Any]]:
    limits = spec.limits
    tmp_size = f"size={limits.tmp_mb}m" if limits.tmp_mb is not None else "size=50%"
    shm_mb = min(64, limits.tmp_mb) if limits.tmp_mb is not None else 64
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_mb}m"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", tmp_size],
        },
        _bind(
            paths.bind_sources.get(IO_DIR_IN_CONTAINER, paths.io_dir), IO_DIR_IN_CONTAINER, readonly=False,
            keep_locked=userns is not None,
        ),
    ]
    seen = {m["destination"] for m in mounts}
    for m in [*spec.mounts, *paths.extra_mounts]:
        if m.target in seen:
            raise InvalidInputError(f"two mounts at {m.target}; give each mount its own target path")
        seen.add(m.target)
        source = paths.bind_sources.get(m.target, m.source)
        mounts.append(_bind(source, m.target, m.readonly, keep_locked=userns is not None))
    return mounts


def build_config(
    spec: SandboxSpec, paths: ContainerPaths, user: ProcessUser, userns: UserNamespace | None = None
) -> dict[str, Any]:
    """The OCI config.json for ``spec`` (a dict; write it with ``json.dump``); ``userns``: run in a user
    namespace with that mapping (the caller has idmapped ``paths.rootfs`` and the bind sources)."""
    limits = spec.limits
    env = spec.resolved_env()
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
        {"type": "cgroup"},
    ]
    namespaces.append({"type": "network", "path": str(paths.netns)} if paths.netns else {"type": "network"})
    if userns is not None:
        namespaces.insert(0, {"type": "user"})
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
            "args": spec.resolved_args(),
            "env": env,
            "cwd": spec.resolved_cwd(),
            "capabilities": capabilities_for(user),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": limits.nofile, "soft": limits.nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(paths.rootfs), "readonly": spec.readonly_rootfs},
        "hostname": spec.hostname or spec.id,
        "mounts": mounts_for(spec, paths, userns),
        "annotations": {"faasd.sandbox.id": spec.id, **criu_annotations(), **dict(spec.annotations)},
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path(spec.id),
            "resources": resources_for(limits),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": default_seccomp(),
        },
    }
    if userns is not None:
        config["linux"].update(userns.oci_mappings())
    return config


# ----------------------------------------------------------------------- users
def _read_db(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str | None) -> ProcessUser:
    """Resolve ``name``/``uid``/``name:group``/``uid:gid`` through the rootfs' /etc/passwd and /etc/group.

    Raises :class:`InvalidInputError` for a name the image does not define.
    """
    if not user:
        return ProcessUser(0, 0, (), "/root")
    passwd = _read_db(rootfs / "etc/passwd")
    groups = _read_db(rootfs / "etc/group")
    name, _, group = user.partition(":")
    entry = next(
        (p for p in passwd if len(p) >= 7 and (p[0] == name or (name.isdigit() and p[2] == name))), None
    )
    if name.isdigit():
        uid = int(name)
    elif entry is not None:
        uid = int(entry[2])
    else:
        raise InvalidInputError(
            f"user {name!r} is not in the image's /etc/passwd; use a numeric uid or add the user"
        )
    home = entry[5] if entry is not None else "/"
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if len(g) >= 3 and g[0] == group), None)
            if g is None:
                raise InvalidInputError(f"group {group!r} is not in the image's /etc/group")
            gid = int(g[2])
    else:
        gid = int(entry[3]) if entry is not None else uid
    extra: list[int] = []
    uname = entry[0] if entry is not None else None
    if uname is not None and not group:
        for g in groups:
            if len(g) >= 4 and uname in g[3].split(",") and int(g[2]) != gid:
                extra.append(int(g[2]))
    return ProcessUser(uid, gid, tuple(sorted(set(extra))), home)
