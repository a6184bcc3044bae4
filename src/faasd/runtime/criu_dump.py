"""Checkpoint a runc sandbox by running CRIU directly (what ``runc checkpoint --leave-running`` does for it).

``runc checkpoint`` starts runc, spawns CRIU once only to ask its version and then runs it as an RPC
service answering its notifications; for a small program that is ~15-25 ms of a ~50 ms dump, all of it
while the sandbox is frozen. This module runs one ``criu dump`` with the options ``runc checkpoint`` passes
(``libcontainer.Checkpoint`` of runc 1.1 is the reference), read from runc's record of the container
(``state.json``): the init's pid, the rootfs, the freezer cgroup, the bind mounts, devices and masked
files as external mounts, the empty network namespace, and writes runc's ``descriptors.json`` (the init's
fds 0-2) into the image so that either restore path can re-attach the stdio pipes.

Only for sandboxes :func:`eligible` accepts (runc, network and pid namespaces of their own, a record to
read, a v1/hybrid cgroup host); the sandbox keeps running (a dump that stops the sandbox goes through
runc, which also removes the container).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faasd.runtime import criu_cli
from faasd.runtime.criu_cli import DESCRIPTORS_JSON
from faasd.runtime.runc_state import labels

DUMP_LOG = "dump.log"


def read_record(runc_root: Path, container_id: str) -> dict[str, Any] | None:
    """runc's record of ``container_id`` (None when there is none to read)."""
    try:
        data = json.loads((runc_root / container_id / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def eligible(record: Mapping[str, Any] | None) -> bool:
    """Whether CRIU can dump the container of ``record`` without runc: its network and pid namespaces are
    its own (runc hands CRIU an external namespace otherwise) and the host has v1 cgroups."""
    if record is None or not criu_cli.eligible_host():
        return False
    config = record.get("config") or {}
    namespaces = {ns.get("type"): ns.get("path", "") for ns in config.get("namespaces") or []}
    return (
        "NEWNET" in namespaces
        and not namespaces["NEWNET"]
        and not namespaces.get("NEWPID", "")
        and isinstance(record.get("init_process_pid"), int)
        and bool(config.get("rootfs"))
    )


def _masked_files(pid: int, config: Mapping[str, Any]) -> list[str]:
    """The masked paths that are files in the container (runc binds ``/dev/null`` over them)."""
    out = []
    for path in config.get("mask_paths") or []:
        try:
            st = os.stat(f"/proc/{pid}/root/{str(path).lstrip('/')}")
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            out.append(str(path))
    return out


def criu_args(
    record: Mapping[str, Any],
    *,
    criu_binary: str,
    image_path: Path,
    work_path: Path,
    criu_opts: Mapping[str, bool],
    masked_files: list[str],
) -> list[str]:
    """``criu dump``'s command line with the options ``runc checkpoint --leave-running`` passes (pure)."""
    config = record["config"]
    args = [
        criu_binary, "dump", "--tree", str(record["init_process_pid"]), "--images-dir", str(image_path),
        "--work-dir", str(work_path), "--log-file", DUMP_LOG, "-v4", "--root", str(config["rootfs"]),
        "--manage-cgroups", "--empty-ns", "net", "--leave-running",
    ]
    criu_config = labels(config).get("org.criu.config")
    if criu_config:
        args += ["--config", criu_config]
    freezer = (record.get("cgroup_paths") or {}).get("freezer")
    if freezer:
        args += ["--freeze-cgroup", str(freezer)]
    args += criu_cli.option_flags(criu_opts)
    for m in config.get("mounts") or []:
        if m.get("device") == "bind":
            args += ["--ext-mount-map", f"{m['destination']}:{m['destination']}"]
    for path in masked_files:
        args += ["--ext-mount-map", f"{path}:/dev/null"]
    for d in config.get("devices") or []:
        if d.get("path"):
            args += ["--ext-mount-map", f"{d['path']}:{d['path']}"]
    return args


async def dump(
    record: Mapping[str, Any],
    *,
    image_path: Path,
    work_path: Path,
    criu_opts: Mapping[str, bool],
    criu_binary: str = "criu",
    timeout_s: float = 120.0,
) -> None:
    """Dump the (frozen) container of ``record`` into ``image_path``; it keeps running. CRIU's log is
    ``work_path/dump.log``."""
    pid = int(record["init_process_pid"])
    masked = await asyncio.to_thread(_masked_files, pid, record["config"])
    image_path.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(image_path / DESCRIPTORS_JSON, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(list(record.get("external_descriptors") or []), f)
    argv = criu_args(
        record, criu_binary=shutil.which(criu_binary) or criu_binary, image_path=image_path,
        work_path=work_path, criu_opts=criu_opts, masked_files=masked,
    )
    devnull = asyncio.subprocess.DEVNULL
    await criu_cli.run(
        argv, what="criu dump", timeout_s=timeout_s, stdin=devnull, stdout=devnull, stderr=devnull
    )
