"""runc's record of a container (``<runc root>/<id>/state.json``) for a sandbox restored without runc.

:mod:`faasd.runtime.criu_restore` restores a sandbox by running CRIU itself; runc must still see the
container afterwards (``runc state/kill/delete/pause/exec/checkpoint`` read its ``state.json``). runc's
record holds its own form of the OCI config (libcontainer's ``configs.Config``), so faasd keeps the record
runc wrote for the sandbox a snapshot was taken from (``runc-state.json`` next to the snapshot's
``config.json``) and derives the new sandbox's record from it.

That is only sound when the two OCI configs differ in what faasd changes between the source and a restored
copy (paths of the root and the bind sources, the cgroup path, the user-namespace range, the sandbox id,
hooks and CRIU's config annotation): :func:`plan` checks exactly that and answers None otherwise (the
restore then goes through ``runc restore``). Pure functions, unit-tested; an integration test compares the
derived record with the one ``runc restore`` writes for the same snapshot.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.runtime import procstat

RUNC_STATE_NAME = "runc-state.json"
"""A snapshot's copy of runc's record of the sandbox it was taken from (beside ``config.json``)."""

_VARYING_ANNOTATIONS = ("faasd.sandbox.id", "org.criu.config")
_RESOURCES_HANDLED = {
    "devices", "memory", "memory_swap", "cpu_shares", "cpu_quota", "cpu_period", "pids_limit",
}
"""The libcontainer cgroup resources :func:`cgroup_writes` applies; a record with any other one set is not
restored without runc."""
_CGROUP_KEYS_HANDLED = _RESOURCES_HANDLED | {"path", "scope_prefix", "Systemd", "Rootless", "cpu_weight"}
"""``cpu_weight`` is runc's v2 form of ``cpu_shares`` (not written on v1 and hybrid hosts)."""
_NS_FILES = {
    "NEWCGROUP": "cgroup", "NEWIPC": "ipc", "NEWNET": "net", "NEWNS": "mnt", "NEWPID": "pid",
    "NEWUSER": "user", "NEWUTS": "uts", "NEWTIME": "time",
}


@dataclass(frozen=True)
class RestoreSource:
    """The sandbox a snapshot was taken from, as runc saw it: its record and its OCI config."""

    state: Mapping[str, Any]
    oci: Mapping[str, Any]


@dataclass(frozen=True)
class StatePlan:
    """What a direct restore needs from the source's record: the new record's config and its cgroups."""

    config: dict[str, Any]
    """libcontainer's config of the new sandbox."""
    cgroup_paths: dict[str, str]
    """controller (``""`` = the unified hierarchy) → the new sandbox's cgroup directory."""
    namespace_types: tuple[str, ...]

    @property
    def bind_mounts(self) -> list[tuple[str, str]]:
        """(destination in the container, host source) of every bind mount, devices and ``/dev/null`` for
        the masked paths included: CRIU's external mounts (what ``runc restore`` passes it)."""
        mounts = self.config.get("mounts") or []
        out = [(m["destination"], m["source"]) for m in mounts if m.get("device") == "bind"]
        if self.config.get("mask_paths"):
            out.append(("/dev/null", "/dev/null"))
        out += [(d["path"], d["path"]) for d in self.config.get("devices") or [] if d.get("path")]
        return out

    @property
    def tmpfs_destinations(self) -> list[str]:
        return [m["destination"] for m in self.config.get("mounts") or [] if m.get("device") == "tmpfs"]

    @property
    def criu_config(self) -> str | None:
        return labels(self.config).get("org.criu.config")


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON data (through the C encoder and decoder: ~1.8x as fast as ``copy.deepcopy``)."""
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


def _normalized(oci: Mapping[str, Any]) -> dict[str, Any]:
    """``oci`` without the fields a restored copy may change (see the module doc)."""
    cfg = _copy(oci)
    cfg.get("root", {}).pop("path", None)
    cfg.pop("hooks", None)
    for m in cfg.get("mounts", []):
        if m.get("type") == "bind":
            m.pop("source", None)
    ann = cfg.get("annotations", {})
    for key in _VARYING_ANNOTATIONS:
        ann.pop(key, None)
    linux = cfg.get("linux", {})
    linux.pop("cgroupsPath", None)
    for key in ("uidMappings", "gidMappings"):
        for m in linux.get(key) or []:
            m.pop("hostID", None)
    for ns in linux.get("namespaces") or []:
        ns.pop("path", None)
    return cfg


def labels(config: Mapping[str, Any]) -> dict[str, str]:
    """libcontainer's ``key=value`` labels (the OCI annotations, plus ``bundle``) as a mapping."""
    out = {}
    for label in config.get("labels") or []:
        key, _, value = str(label).partition("=")
        out[key] = value
    return out


def _hooks(oci: Mapping[str, Any]) -> dict[str, Any]:
    """libcontainer's form of the OCI hooks (timeouts in nanoseconds)."""
    out: dict[str, Any] = {}
    for name in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"):
        hooks = (oci.get("hooks") or {}).get(name)
        out[name] = None if not hooks else [
            {
                "path": h["path"],
                "args": h.get("args"),
                "env": h.get("env"),
                "dir": "",
                **({"timeout": int(h["timeout"]) * 1_000_000_000} if h.get("timeout") is not None else {}),
            }
            for h in hooks
        ]
    return out


def plan(
    source_state: Mapping[str, Any],
    source_oci: Mapping[str, Any],
    new_oci: Mapping[str, Any],
    bundle: Path,
) -> StatePlan | None:
    """The new sandbox's record, derived from ``source_state`` (runc's record of the snapshot's source,
    whose OCI config was ``source_oci``) for the restored config ``new_oci``; None when the configs differ
    in more than what a restored copy changes, or the record uses what :func:`cgroup_writes` does not."""
    if _normalized(source_oci) != _normalized(new_oci):
        return None
    cfg = _copy(source_state.get("config") or {})
    if (  # the record must be of the sandbox source_oci describes
        source_state.get("id") != (source_oci.get("annotations") or {}).get("faasd.sandbox.id")
        or cfg.get("rootfs") != (source_oci.get("root") or {}).get("path")
    ):
        return None
    cgroups = cfg.get("cgroups") or {}
    for key, value in cgroups.items():
        if key not in _CGROUP_KEYS_HANDLED and value not in (None, 0, "", False, [], {}):
            return None  # a limit cgroup_writes does not apply
    old_path = str(cgroups.get("path", ""))
    new_path = str(new_oci.get("linux", {}).get("cgroupsPath", ""))
    if not old_path or not new_path:
        return None
    cgroups["path"] = new_path
    cfg["rootfs"] = str(new_oci["root"]["path"])
    binds = {m["destination"]: m["source"] for m in new_oci.get("mounts", []) if m.get("type") == "bind"}
    for m in cfg.get("mounts") or []:
        if m.get("device") == "bind":
            if m.get("destination") not in binds:
                return None
            m["source"] = binds[m["destination"]]
    linux = new_oci.get("linux", {})
    for key, oci_key in (("uid_mappings", "uidMappings"), ("gid_mappings", "gidMappings")):
        cfg[key] = [
            {"container_id": m["containerID"], "host_id": m["hostID"], "size": m["size"]}
            for m in linux.get(oci_key) or []
        ] or None
    root_uid = next((m["host_id"] for m in cfg.get("uid_mappings") or [] if m["container_id"] == 0), 0)
    root_gid = next((m["host_id"] for m in cfg.get("gid_mappings") or [] if m["container_id"] == 0), 0)
    for d in cfg.get("devices") or []:
        d["uid"], d["gid"] = root_uid, root_gid
    paths = {ns.get("type"): ns.get("path", "") for ns in linux.get("namespaces") or []}
    oci_to_lc = {"pid": "NEWPID", "network": "NEWNET", "mount": "NEWNS", "ipc": "NEWIPC", "uts": "NEWUTS",
                 "user": "NEWUSER", "cgroup": "NEWCGROUP", "time": "NEWTIME"}
    for ns in cfg.get("namespaces") or []:
        oci_type = next((k for k, v in oci_to_lc.items() if v == ns.get("type")), None)
        ns["path"] = paths.get(oci_type, "") if oci_type else ns.get("path", "")
    cfg["Hooks"] = _hooks(new_oci)
    new_labels = {**labels(cfg), **{k: str(v) for k, v in (new_oci.get("annotations") or {}).items()}}
    new_labels["bundle"] = str(bundle)
    cfg["labels"] = [f"{k}={v}" for k, v in new_labels.items()]
    cgroup_paths = {}
    for ctrl, path in (source_state.get("cgroup_paths") or {}).items():
        if not str(path).endswith(old_path):
            return None
        cgroup_paths[ctrl] = str(path)[: -len(old_path)] + new_path
    if not cgroup_paths:
        return None
    namespace_types = tuple((source_state.get("namespace_paths") or {}).keys())
    return StatePlan(cfg, cgroup_paths, namespace_types)


def cgroup_writes(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(controller, file, value) writes that give a fresh v1 cgroup the limits of ``config`` (libcontainer
    form), in the order ``runc`` writes them (memory before memsw, period before quota, deny before allow)."""
    cg = config.get("cgroups") or {}
    out: list[tuple[str, str, str]] = []
    rules = cg.get("devices") or []
    if rules:
        for rule in rules:
            kind = {97: "a", 98: "b", 99: "c"}.get(int(rule.get("type", 97)), "a")
            major = "*" if int(rule.get("major", -1)) < 0 else str(rule["major"])
            minor = "*" if int(rule.get("minor", -1)) < 0 else str(rule["minor"])
            line = "a" if kind == "a" else f"{kind} {major}:{minor} {rule.get('permissions', 'rwm')}"
            out.append(("devices", "devices.allow" if rule.get("allow") else "devices.deny", line))
    if cg.get("memory"):
        out.append(("memory", "memory.limit_in_bytes", str(cg["memory"])))
    if cg.get("memory_swap"):
        out.append(("memory", "memory.memsw.limit_in_bytes", str(cg["memory_swap"])))
    if cg.get("cpu_shares"):
        out.append(("cpu", "cpu.shares", str(cg["cpu_shares"])))
    if cg.get("cpu_period"):
        out.append(("cpu", "cpu.cfs_period_us", str(cg["cpu_period"])))
    if cg.get("cpu_quota"):
        out.append(("cpu", "cpu.cfs_quota_us", str(cg["cpu_quota"])))
    if cg.get("pids_limit"):
        limit = int(cg["pids_limit"])
        out.append(("pids", "pids.max", "max" if limit < 0 else str(limit)))
    return out


def record(container_id: str, pid: int, state_plan: StatePlan) -> dict[str, Any]:
    """runc's record of the restored sandbox ``container_id`` whose init is ``pid``."""
    created = datetime.datetime.now(datetime.UTC)
    descriptors = []
    for fd in (0, 1, 2):
        try:
            descriptors.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            descriptors.append("/dev/null")
    return {
        "id": container_id,
        "init_process_pid": pid,
        "init_process_start": procstat.read(pid).start_ticks,  # runc's identity check of the init
        "created": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond * 1000:09d}Z",
        "config": state_plan.config,
        "rootless": False,
        "cgroup_paths": state_plan.cgroup_paths,
        "namespace_paths": {
            t: f"/proc/{pid}/ns/{_NS_FILES[t]}" for t in state_plan.namespace_types if t in _NS_FILES
        },
        "external_descriptors": descriptors,
        "intel_rdt_path": "",
    }


def write_record(state_dir: Path, state: Mapping[str, Any]) -> None:
    """Write ``state.json`` in runc's state dir as runc does (a temporary file renamed over it, mode 0600)."""
    tmp = state_dir / f".state-{os.getpid()}-{id(state)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state))  # one write: json.dump writes each of its ~2,000 chunks apart
    os.rename(tmp, state_dir / "state.json")
