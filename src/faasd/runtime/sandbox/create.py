"""The steps of creating (or restoring) a sandbox: io dir, user namespace, overlay rootfs, netns, config.json,
stdio pipes, ``runc create`` / ``runc restore --detach``. :class:`~faasd.runtime.sandbox.SandboxManager`
registers the sandbox first and undoes everything if a step fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.errors import RuntimeFailure
from faasd.rootfs import OverlayRootfs, idmap
from faasd.rootfs import mounts as _mounts
from faasd.runtime import criu_cli, criu_conf, criu_restore, ksm, network, reaper, runc_state, userns
from faasd.runtime.models import IO_DIR_IN_CONTAINER, SandboxSpec
from faasd.runtime.runc import read_log_errors
from faasd.runtime.runc_state import RestoreSource
from faasd.runtime.sandbox.output import OutputCallback, OutputCollector, collector_factory
from faasd.runtime.sandbox.sandbox import Sandbox
from faasd.runtime.sandbox.userns_setup import (
    BINDS_ANNOTATION,
    bind_origins,
    idmap_binds,
    restore_config,
    restore_images_dir,
    stage_root,
)
from faasd.runtime.spec import ContainerPaths, ProcessUser, build_config, resolve_user

IO_DIR_TMPFS_OPTIONS = "size=1m,nr_inodes=64,mode=0755"
"""The bundle's ``io/`` dir (read-write at ``/run/faasd-io``, holds only the agent's Unix socket) is its own
tiny tmpfs, so a sandbox cannot write past disk_mb/tmp_mb onto the host's run_dir filesystem through it."""


def mount_io_dir(io_dir: Path) -> None:
    _mounts.mount(
        "faasd-io", io_dir, "tmpfs", _mounts.MS_NOSUID | _mounts.MS_NODEV | _mounts.MS_NOEXEC,
        IO_DIR_TMPFS_OPTIONS,
    )


@dataclass
class RestoreJob:
    """What :meth:`SandboxManager.restore` was asked to restore, and how."""

    image_path: Path
    config: Mapping[str, Any] | Callable[[Sandbox], Mapping[str, Any]]
    work_path: Path | None
    criu_opts: dict[str, bool]
    timeout_s: float | None = None
    share_memory: bool = False
    source: RestoreSource | None = None
    """runc's record of the snapshot's source sandbox: lets CRIU restore without runc."""


def wants_userns(settings: Settings, spec: SandboxSpec) -> bool:
    """Whether ``spec``'s sandbox runs in a user namespace (its own choice, else the daemon's default)."""
    wanted = spec.userns if spec.userns is not None else settings.userns
    return wanted and spec.runtime == "runc"


async def create_steps(
    sb: Sandbox,
    settings: Settings,
    fds: list[int],
    stdin_pipe: bool,
    on_output: OutputCallback | None,
    output_limit: int,
    restore: RestoreJob | None = None,
) -> None:
    """Mount the io dir and the rootfs, make the netns (egress link), write config.json, open the stdio pipes
    and ``runc create`` (or ``runc restore --detach``) the prepared ``sb``. Leaves the undoing of a failure
    to the caller (``fds``: descriptors it must close then).
    """
    spec, bundle, loop = sb.spec, sb.bundle, asyncio.get_running_loop()
    sb.io_dir.mkdir()
    mount_io_dir(sb.io_dir)  # unmounted with everything under the bundle on teardown
    fallback = restore is None
    image_path = restore.image_path if restore is not None else None
    id_map: idmap.IdMap | None = None
    if wants_userns(settings, spec):
        sb.userns = ns = userns.allocate(spec.id)  # released by _teardown
        # a cancelled create still waits for the thread, so that teardown finds the pin it made
        made = loop.run_in_executor(None, userns.pin_userns, spec.id, ns)
        try:
            await asyncio.shield(made)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await made
            raise
        id_map = idmap.IdMap(ns.host_id, ns.size, userns.userns_path(spec.id))
        # runc (CRIU on restore) makes the netns inside the user namespace; pinned here after that
        sb.netns = network.netns_path(spec.id)
    sb.rootfs = await loop.run_in_executor(
        None,
        lambda: OverlayRootfs.mount(
            spec.lowers, bundle, spec.limits.disk_mb, backend=spec.limits.disk_backend,
            allow_copy_fallback=fallback, image_dir=settings.data_dir / "scratch",
            memory_mb=spec.limits.memory_mb, idmap=id_map,
        ),
    )
    if sb.userns is None:
        sb.netns = await network.acreate_netns(spec.id)
        if spec.network.mode == "egress":
            sb.egress = await loop.run_in_executor(None, network.setup_egress, spec.id, sb.netns)
    if restore is None:
        sb.user = resolve_user(sb.rootfs.path, spec.resolved_user())
        binds = [(IO_DIR_IN_CONTAINER, sb.io_dir), *((m.target, m.source) for m in spec.mounts)]
        bind_sources = await loop.run_in_executor(None, idmap_binds, sb, binds)
        root = sb.rootfs.path if sb.userns is None else await loop.run_in_executor(None, stage_root, sb)
        config: Mapping[str, Any] = build_config(
            spec,
            ContainerPaths(
                rootfs=root, io_dir=sb.io_dir, netns=sb.netns if sb.userns is None else None,
                bind_sources=bind_sources,
            ),
            sb.user,
            sb.userns,
        )
        if sb.userns is not None:
            config["annotations"][BINDS_ANNOTATION] = json.dumps(bind_origins(sb, binds))
    else:
        config = restore.config(sb) if callable(restore.config) else restore.config
        config = await loop.run_in_executor(None, restore_config, sb, config)
        if sb.userns is not None:
            # on the images' filesystem, so they are hard links, not copies
            images = restore_images_dir(settings, spec.id, restore.image_path)
            image_path = await loop.run_in_executor(
                None, userns.images_for, restore.image_path, images, sb.userns
            )
        user = config.get("process", {}).get("user", {})
        sb.user = ProcessUser(int(user.get("uid", 0)), int(user.get("gid", 0)))
    if sb.runtime.name == "runc":  # CRIU's settings for this host (with its cgroup yard when it has one)
        config = {**config, "annotations": {
            **config.get("annotations", {}), criu_conf.CRIU_CONFIG_ANNOTATION: str(criu_conf.config_file()),
        }}
    os.chown(sb.io_dir, sb.user.uid, sb.user.gid)
    sb.io_dir.chmod(0o770)
    sb.config_path.write_text(json.dumps(config))  # no indent: with one json uses its Python encoder (~4x)
    # stdio: pipes we own; the container keeps its ends after `runc create` exits
    if stdin_pipe:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        fds += [in_r, in_w]
    else:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
        fds.append(in_r)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    fds += [out_r, out_w, err_r, err_w]
    for name, fd in (("stdout", out_r), ("stderr", err_r)):
        col = OutputCollector(name, output_limit, on_output)
        transport, _ = await loop.connect_read_pipe(collector_factory(col), os.fdopen(fd, "rb", buffering=0))
        fds.remove(fd)  # owned by the transport now
        sb._collectors[name] = col
        sb._transports.append(transport)
    log_file = bundle / "runc.log"
    pid_file = bundle / "init.pid"
    state_plan: runc_state.StatePlan | None = None
    if restore is not None:
        work = restore.work_path or bundle / "criu-restore"
        work.mkdir(parents=True, exist_ok=True)
        opts = restore.criu_opts
        criu_env = ksm.CRIU_ENV if restore.share_memory and ksm.supported() else None
        state_plan = _direct_plan(sb, settings, restore, config)
        sb.restored_by = "criu" if state_plan is not None else "runc"
    try:
        if restore is None:
            sb.pid = await sb.runtime.create(
                spec.id, bundle, stdin=in_r, stdout=out_w, stderr=err_w, pid_file=pid_file,
                log_file=log_file,
            )
        elif state_plan is not None:
            sb.pid = await criu_restore.restore(
                runc_root=sb.runtime.root, container_id=spec.id, bundle=bundle, state_plan=state_plan,
                image_path=image_path or restore.image_path, work_path=work, pid_file=pid_file,
                stdin=in_r, stdout=out_w, stderr=err_w, criu_opts=opts, criu_binary=settings.criu_binary,
                env=criu_env,
                **({} if restore.timeout_s is None else {"timeout_s": restore.timeout_s}),
            )
        else:
            await sb.runtime.restore(
                spec.id, bundle, image_path or restore.image_path, stdin=in_r, stdout=out_w, stderr=err_w,
                log_file=log_file, work_path=work, detach=True, pid_file=pid_file,
                tcp_established=opts.get("tcp_established", False),
                file_locks=opts.get("file_locks", False), ext_unix_sk=opts.get("ext_unix_sk", False),
                shell_job=opts.get("shell_job", False),
                env=criu_env,
                **({} if restore.timeout_s is None else {"timeout_s": restore.timeout_s}),
            )
            sb.pid = int(pid_file.read_text().strip())
    except RuntimeFailure as exc:
        logged = read_log_errors(log_file)
        if logged and logged not in exc.message:
            exc.message = f"{exc.message} ({logged})"
        if restore is not None and restore.work_path is None:  # CRIU's log goes with the bundle: quote it now
            exc.message = f"{exc.message}{_criu_errors(work / 'restore.log')}"
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            with contextlib.suppress(OSError):
                os.close(fd)
            if fd in fds:
                fds.remove(fd)
        if image_path is not None and restore is not None and image_path != restore.image_path:
            shutil.rmtree(image_path, ignore_errors=True)  # CRIU has read them
    if stdin_pipe:
        sb._stdin_fd = in_w
        fds.remove(in_w)
    if sb.userns is not None:
        assert sb.pid is not None
        sb.netns = await loop.run_in_executor(
            # after runc restore its prestart hook brought lo up already (see userns_setup.LO_UP_HOOK)
            None, lambda: userns.pin_netns(spec.id, sb.pid or 0, lo_up=sb.restored_by != "runc")
        )
        if spec.network.mode == "egress":
            sb.egress = await loop.run_in_executor(None, network.setup_egress, spec.id, sb.netns)
    if sb.runtime.name == "runsc":
        sb._helper_pids = [p for p in reaper.children_with_arg(str(bundle)) if p != sb.pid]
    if restore is None:
        sb._status = "created"
    else:
        sb._status = "running"
        sb.started_at = time.monotonic()
    sb._waiter = asyncio.ensure_future(sb._watch())


def _direct_plan(
    sb: Sandbox, settings: Settings, restore: RestoreJob, config: Mapping[str, Any]
) -> runc_state.StatePlan | None:
    """runc's record of the restored sandbox when CRIU may restore it without runc, else None."""
    if (
        not settings.criu_direct
        or restore.source is None
        or sb.runtime.name != "runc"
        or sb.userns is None
        or not criu_cli.eligible_host()
    ):
        return None
    return runc_state.plan(restore.source.state, restore.source.oci, config, sb.bundle)


def _criu_errors(log: Path, limit: int = 8) -> str:
    """The last ``Error`` lines of a CRIU log (empty when there is none to read)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line][-limit:]
    return ("\n" + "\n".join(errors)) if errors else ""
