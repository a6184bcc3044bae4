"""Restore a runc sandbox by running CRIU directly, then registering it with runc.

``runc restore`` costs about as much as CRIU's own restore around it (measured: ~45 of ~95 ms for a small
Python program): runc starts, spawns CRIU once only to ask its version, applies the cgroups, runs CRIU as an
RPC service answering each of its notifications, and runs the prestart hook (``lo`` up: a shell, grep, cut,
nsenter and ip) at CRIU's ``setup-namespaces``. This module does what ``runc restore`` does for faasd's
sandboxes (``libcontainer.Restore`` of runc 1.1 is the reference) with one ``criu restore`` process:

* runc's state dir, and the container's cgroups with the limits of its config
  (:func:`faasd.runtime.runc_state.cgroup_writes`);
* CRIU's root: the rootfs bind-mounted at ``<state dir>/criu-root`` (CRIU needs a mount point whose parent
  is not overmounted);
* ``criu restore`` with runc's options: the bind mounts, devices and ``/dev/null`` as external mounts, the
  network namespace empty (runc dumps it so), the stdio pipes inherited, the cgroup root, faasd's CRIU
  config file, ``--restore-detached`` (the restored init is re-parented to the daemon, its subreaper);
* runc's ``state.json``, derived from the record of the sandbox the snapshot was taken from
  (:mod:`faasd.runtime.runc_state`), so ``runc state/kill/delete/exec/checkpoint`` work as for any sandbox.

``lo`` is brought up by the caller once the netns is pinned (nothing in the sandbox runs before CRIU's
restore completes), except for an image with established TCP connections: CRIU reconnects them while it
restores the sockets, so :data:`LO_UP_SCRIPT` brings ``lo`` up as CRIU's action script at
``setup-namespaces`` (CRIU runs such a script at each of its ~7 stages: ~1 ms each, so only then).
Eligibility (user-namespaced runc sandboxes on v1/hybrid cgroup hosts, a snapshot that kept runc's record,
configs that differ only as copies do) is decided by the caller with :func:`runc_state.plan`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from faasd.errors import ConflictError, RuntimeFailure
from faasd.rootfs import mounts
from faasd.runtime import cgroups, criu_cli, criu_conf
from faasd.runtime.criu_cli import DESCRIPTORS_JSON
from faasd.runtime.runc_state import StatePlan, cgroup_writes, record, write_record

LO_UP_SCRIPT = Path(__file__).with_name("criu_lo_up.sh")
"""CRIU action script bringing ``lo`` up at ``setup-namespaces`` (what runc's prestart hook did)."""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _fill_cpuset(path: Path) -> None:
    """A fresh v1 cpuset has no CPUs nor memory nodes: copy them from the parent (and the parent's, ...)."""
    chain = []
    p = path
    while (p / "cpuset.cpus").exists() and p != p.parent:
        chain.append(p)
        p = p.parent
    for d in reversed(chain[:-1]):  # the top one is the hierarchy's root: always filled
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (d / name).read_text().strip():
                _write(d / name, (d.parent / name).read_text().strip())


def make_cgroups(state_plan: StatePlan) -> None:
    """Create the sandbox's cgroup in every hierarchy and apply its limits (undo: ``cgroups.remove``)."""
    for ctrl, path in state_plan.cgroup_paths.items():
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        if ctrl == "cpuset":
            _fill_cpuset(d)
    for ctrl, name, value in cgroup_writes(state_plan.config):
        target = state_plan.cgroup_paths.get(ctrl)
        if target is None:
            raise RuntimeFailure(f"the sandbox has a {ctrl} limit but no {ctrl} cgroup")
        _write(Path(target) / name, value)


def criu_args(
    state_plan: StatePlan,
    *,
    criu_binary: str,
    image_path: Path,
    work_path: Path,
    criu_root: Path,
    pid_file: Path,
    cgroup_path: str,
    criu_opts: Mapping[str, bool],
    cgroup_yard: Path | None = None,
) -> list[str]:
    """``criu restore``'s command line with the options ``runc restore`` passes over RPC (pure)."""
    args = [
        criu_binary, "restore", "--images-dir", str(image_path), "--work-dir", str(work_path),
        "--log-file", "restore.log", "-v4", "--evasive-devices", "--root", str(criu_root),
        "--manage-cgroups", "--cgroup-root", cgroup_path, "--empty-ns", "net", "--restore-detached",
        "--pidfile", str(pid_file),
    ]
    if cgroup_yard is not None:
        args += ["--cgroup-yard", str(cgroup_yard)]
    if needs_lo_up(image_path):
        args += ["--action-script", str(LO_UP_SCRIPT)]
    if state_plan.criu_config:
        args += ["--config", state_plan.criu_config]
    args += criu_cli.option_flags(criu_opts)
    for dest, source in state_plan.bind_mounts:
        args += ["--ext-mount-map", f"{dest}:{source}"]
    try:
        descriptors = json.loads((image_path / DESCRIPTORS_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"the CRIU image in {image_path} has no readable {DESCRIPTORS_JSON}: {exc}"
        ) from exc
    for fd, name in enumerate(descriptors[:3]):
        if "pipe:" in str(name):
            args += ["--inherit-fd", f"fd[{fd}]:{name}"]
    return args


def needs_lo_up(image_path: Path) -> bool:
    """Whether the image holds established TCP connections (CRIU writes a ``tcp-stream-*.img`` for each)."""
    return next(image_path.glob("tcp-stream-*.img"), None) is not None


def _make_mountpoints(state_plan: StatePlan, rootfs: Path) -> None:
    """Mount points of the non-bind mounts outside a tmpfs (CRIU restores a tmpfs' content itself)."""
    tmpfs = state_plan.tmpfs_destinations
    for m in state_plan.config.get("mounts") or []:
        dest = str(m.get("destination", ""))
        if m.get("device") in ("bind", "cgroup") or any(dest.startswith(t + "/") for t in tmpfs):
            continue
        rel = dest.lstrip("/")
        if not rel or ".." in Path(rel).parts:
            continue
        target = rootfs / rel
        if not (target.exists() or target.is_symlink()):
            target.mkdir(parents=True, exist_ok=True)


async def restore(
    *,
    runc_root: Path,
    container_id: str,
    bundle: Path,
    state_plan: StatePlan,
    image_path: Path,
    work_path: Path,
    pid_file: Path,
    stdin: int,
    stdout: int,
    stderr: int,
    criu_opts: Mapping[str, bool],
    criu_binary: str = "criu",
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> int:
    """Restore ``container_id`` from the CRIU image at ``image_path`` (see the module doc); returns the
    restored init's pid. On failure nothing of it is left (state dir, cgroups, CRIU root mount)."""
    state_dir = runc_root / container_id
    try:
        state_dir.mkdir(mode=0o711)
    except FileExistsError:
        raise ConflictError(f"runc already has a container {container_id}") from None
    rootfs = Path(state_plan.config["rootfs"])
    criu_root = state_dir / "criu-root"
    mounted = False
    try:
        await asyncio.to_thread(make_cgroups, state_plan)
        await asyncio.to_thread(_make_mountpoints, state_plan, rootfs)
        criu_root.mkdir(mode=0o755)
        mounts.mount(str(rootfs), criu_root, None, mounts.MS_BIND | mounts.MS_REC)
        mounted = True
        # private: what CRIU mounts below its copy of the root (in its own mount namespace) must not
        # propagate back to this one (nor this one's mounts into CRIU's)
        mounts.mount("none", criu_root, None, mounts.MS_REC | mounts.MS_PRIVATE)
        argv = criu_args(
            state_plan, criu_binary=shutil.which(criu_binary) or criu_binary, image_path=image_path,
            work_path=work_path, criu_root=criu_root, pid_file=pid_file,
            cgroup_path=str(state_plan.config["cgroups"]["path"]), criu_opts=criu_opts,
            cgroup_yard=await asyncio.to_thread(criu_conf.cgroup_yard),
        )
        await criu_cli.run(
            argv, what=f"criu restore of sandbox {container_id}", timeout_s=timeout_s,
            details={"sandbox": container_id}, stdin=stdin, stdout=stdout, stderr=stderr, cwd=str(bundle),
            env={**os.environ, **env} if env else None,
        )
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"criu restore wrote no pid file {pid_file}: {exc}") from exc
        write_record(state_dir, record(container_id, pid, state_plan))
    except BaseException:
        if mounted:
            await asyncio.to_thread(mounts.unmount_all_under, criu_root)
        await asyncio.to_thread(cgroups.remove, container_id)
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    await asyncio.to_thread(_unmount_criu_root, criu_root)
    return pid


def _unmount_criu_root(criu_root: Path) -> None:
    """Detach the CRIU root (one recursive bind: one ``umount2``) and remove its mount point; through the
    reader of the host's whole mount table (``unmount_all_under``) only when that fails."""
    try:
        mounts.umount(criu_root, mounts.MNT_DETACH | mounts.UMOUNT_NOFOLLOW)
        criu_root.rmdir()
    except OSError:
        mounts.unmount_all_under(criu_root)
        with contextlib.suppress(OSError):
            criu_root.rmdir()

