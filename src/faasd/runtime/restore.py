"""Restoring a sandbox from a CRIU (or gVisor) capture of :func:`faasd.runtime.checkpoint.checkpoint`.

:func:`restore` starts a *new* sandbox from such a capture: a fresh overlay whose read-only lowers are the
image layers plus the snapshot's upper dir(s) (copy-on-write: every copy gets its own empty upper, nothing
is copied; a branch of a branch just adds one more lower), a fresh network namespace (one per copy), the
dumped config.json with this sandbox's paths, stdio on pipes (CRIU cannot restore a host file as stdout),
then CRIU directly (:mod:`faasd.runtime.criu_restore`) or ``runc restore --detach``. If the sandbox runs a
faasd agent (``io/agent.sock`` exists), the agent is told it was restored (it reseeds PRNGs and runs
``after_restore`` hooks): every copy of one image starts with identical memory, including ``random``'s
state.

CRIU's work dir (its log) during a restore: ``<run_dir>/criu-work/<sandbox-id>-<n>/``, locked while in use
(:mod:`faasd.runtime.criu_work`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.errors import FaasdError, InvalidInputError, RuntimeFailure
from faasd.rootfs import mounts
from faasd.runtime import gvisor_checkpoint
from faasd.runtime.agent_client import AgentClient
from faasd.runtime.agent_files import AGENT_SOCKET_NAME
from faasd.runtime.checkpoint import CRIU_OPTS
from faasd.runtime.criu_conf import cgroup_yard, criu_annotations
from faasd.runtime.criu_work import RESTORE_WORK_DIR, log_tail, make_work_dir, read_log, remove_work_dir
from faasd.runtime.models import SANDBOX_ID_RE, Limits, NetworkSpec, SandboxSpec, UserNamespace
from faasd.runtime.runc_state import RUNC_STATE_NAME, RestoreSource
from faasd.runtime.sandbox import OUTPUT_LIMIT_BYTES, Sandbox, SandboxManager


@dataclass
class SnapshotDirs:
    """Directories of a snapshot to restore: the CRIU image, the dumped config.json, and the read-only
    lowers of the new sandbox (image layers, then the snapshot upper chain, lowest first)."""

    criu: Path
    config_json: Path
    lowers: list[Path]


@dataclass
class Restored:
    """A sandbox started by ``runc restore`` (a regular :class:`~faasd.runtime.sandbox.Sandbox`, owned
    by its manager: destroy it with ``sandbox.destroy()``), plus how the restore went."""

    sandbox: Sandbox
    timings_ms: dict[str, float]
    agent_ack: dict[str, Any] | None = None


def _runc_source(snapshot: SnapshotDirs, dumped: dict[str, Any]) -> RestoreSource | None:
    """runc's record of the snapshot's source sandbox, when the snapshot kept it."""
    try:
        state = json.loads((snapshot.config_json.parent / RUNC_STATE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return RestoreSource(state, dumped) if isinstance(state, dict) else None


def rewrite_config(
    config: dict[str, Any],
    *,
    old_bundle: str | None,
    new_bundle: Path,
    new_id: str,
    rootfs: Path,
    netns: Path,
) -> dict[str, Any]:
    """The dumped config.json with the paths of the new sandbox (pure: unit-tested)."""
    cfg = json.loads(json.dumps(config))
    cfg["root"]["path"] = str(rootfs)
    linux = cfg.setdefault("linux", {})
    namespaces = [n for n in linux.get("namespaces", []) if n.get("type") != "network"]
    namespaces.append({"type": "network", "path": str(netns)})
    linux["namespaces"] = namespaces
    linux["cgroupsPath"] = f"/faasd/{new_id}"
    for m in cfg.get("mounts", []):
        src = m.get("source", "")
        if old_bundle and m.get("type") == "bind" and (src == old_bundle or src.startswith(old_bundle + "/")):
            m["source"] = str(new_bundle) + src[len(old_bundle) :]
    ann = cfg.setdefault("annotations", {})
    ann["faasd.sandbox.id"] = new_id
    ann.update(criu_annotations())  # this faasd's CRIU settings (the dumped path may be another install's)
    return cfg


async def restore(
    manager: SandboxManager,
    snapshot: SnapshotDirs,
    new_id: str,
    *,
    limits: Limits | None = None,
    network: NetworkSpec | None = None,
    notify_agent: bool = True,
    agent_timeout_s: float = 10.0,
    criu_opts: dict[str, bool] | None = None,
    output_limit: int = OUTPUT_LIMIT_BYTES,
    timeout_s: float = 60.0,
    seed: str | None = None,
    share_memory: bool = True,
    isolation: str | None = None,
) -> Restored:
    """Start sandbox ``new_id`` of ``manager`` running from a snapshot (``runc restore --detach``).

    ``seed`` (with ``notify_agent``): the agent reseeds its PRNGs from it instead of the kernel.

    The new sandbox gets a fresh overlay (``snapshot.lowers`` read-only + its own empty upper bounded
    by ``limits.disk_mb``), a fresh netns with ``lo`` up (plus a fresh egress link when ``network`` asks
    for one: connections the process had open before the snapshot do not survive), its own cgroup,
    stdio on pipes (collected like any sandbox's: ``sandbox.stdout()``), and is registered with the
    manager like a created one.
    ``share_memory`` (default on): the restored processes are opted into KSM (:mod:`faasd.runtime.ksm`),
    so while the host runs ``ksmd`` the copies of one snapshot share every page none of them changed.
    ``isolation`` (``runc``/``gvisor``, default: the snapshot's): a snapshot is restored under the backend
    that captured it (CRIU images under runc, gVisor images under runsc:
    :mod:`faasd.runtime.gvisor_checkpoint`); asking for the other
    one is an :class:`~faasd.errors.IsolationUnsupportedError`.
    If any step fails, everything is undone.
    """
    if not SANDBOX_ID_RE.match(new_id):
        raise InvalidInputError(f"sandbox id {new_id!r} must match {SANDBOX_ID_RE.pattern}")
    for p in (snapshot.criu, snapshot.config_json, *snapshot.lowers):
        if not p.exists():
            raise InvalidInputError(f"snapshot part {p} does not exist")
    dumped: dict[str, Any] = json.loads(snapshot.config_json.read_text())
    kind = gvisor_checkpoint.isolation_of_config(dumped)
    gvisor_checkpoint.check_restore_isolation(kind, isolation, f"snapshot of sandbox {_dumped_id(dumped)}")
    if kind == gvisor_checkpoint.GVISOR:
        gvisor_checkpoint.check_image(snapshot.criu)
        opts: dict[str, bool] = {}  # runsc restore has none of CRIU's options
    else:
        opts = dict(CRIU_OPTS if criu_opts is None else criu_opts)
    spec = SandboxSpec(
        id=new_id,
        lowers=list(snapshot.lowers),
        args=list(dumped["process"]["args"]),
        limits=limits or Limits(),
        network=network or NetworkSpec(),
        annotations={"faasd.restored": "true"},
        userns=UserNamespace.from_config(dumped) is not None,  # a new range if the snapshot ran in one
        runtime=gvisor_checkpoint.runtime_of_isolation(kind),
    )
    timings: dict[str, float] = {}
    cgroup_yard()  # CRIU's kdat cache dir and cgroup yard
    t0 = time.perf_counter()

    def config_for(sb: Sandbox) -> dict[str, Any]:
        # called by the manager once the overlay and the fresh netns exist
        assert sb.rootfs is not None and sb.netns is not None
        timings["prepare"] = (time.perf_counter() - t0) * 1000
        return rewrite_config(
            dumped,
            old_bundle=_old_bundle(dumped),
            new_bundle=sb.bundle,
            new_id=new_id,
            rootfs=sb.rootfs.path,
            netns=sb.netns,
        )

    # CRIU's work dir (restore.log) lives outside the bundle so that it can be quoted after the
    # manager has undone a failed restore
    work = manager.settings.run_dir / RESTORE_WORK_DIR / f"{new_id}-{time.monotonic_ns()}"
    work_fd = make_work_dir(work)
    runtime = manager.runtime(spec.runtime)
    try:
        sb = await manager.restore(
            spec, snapshot.criu, config_for, work_path=work, criu_opts=opts, output_limit=output_limit,
            timeout_s=timeout_s, share_memory=share_memory, source=_runc_source(snapshot, dumped),
        )
    except BaseException as exc:
        # the manager undid its steps; a failed `runc restore` can also leave its CRIU root
        # bind-mounted in runc's state dir
        state_dir = runtime.root / new_id
        if state_dir.exists() and manager.get(new_id) is None:
            await asyncio.to_thread(mounts.unmount_all_under, state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)
        if isinstance(exc, RuntimeFailure):
            log = read_log(work / "restore.log")
            engine = "gVisor (runsc)" if kind == gvisor_checkpoint.GVISOR else "CRIU"
            raise RuntimeFailure(
                f"{engine} restore of sandbox {new_id} failed: {exc.message}\n{log_tail(log)}", sandbox=new_id
            ) from exc
        raise
    finally:
        remove_work_dir(work, work_fd)
    t2 = time.perf_counter()
    timings["restore"] = (t2 - t0) * 1000 - timings.get("prepare", 0.0)  # runc restore or criu restore
    ack = None
    try:
        _publish_agent_socket(sb.io_dir)
        if notify_agent and (sb.io_dir / AGENT_SOCKET_NAME).exists():
            ack = await notify_restored(sb.io_dir / AGENT_SOCKET_NAME, agent_timeout_s, seed=seed)
            timings["notify_agent"] = (time.perf_counter() - t2) * 1000
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.shield(sb.destroy())
        if isinstance(exc, OSError) and not isinstance(exc, FaasdError):
            raise RuntimeFailure(f"restoring sandbox {new_id} failed: {exc}") from exc
        raise
    timings["total"] = (time.perf_counter() - t0) * 1000
    return Restored(sandbox=sb, timings_ms=timings, agent_ack=ack)


def _publish_agent_socket(io_dir: Path) -> None:
    """Put the agent's restored listening socket back at ``io/agent.sock``.

    CRIU re-binds a unix socket at the path it was *bound* to; an agent that binds a temporary name
    and renames it into place (so the host never sees a half-ready socket) comes back under the
    temporary name. The io dir is ours, so rename it again.
    """
    final = io_dir / AGENT_SOCKET_NAME
    if final.exists():
        return
    for p in sorted(io_dir.glob(AGENT_SOCKET_NAME + ".*")):
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(p.lstat().st_mode):
                os.rename(p, final)
                return


def _dumped_id(config: dict[str, Any]) -> str:
    return str((config.get("annotations") or {}).get("faasd.sandbox.id", "?"))


def _old_bundle(config: dict[str, Any]) -> str | None:
    """The bundle dir of the dumped sandbox (parent of its rootfs mount point)."""
    root = config.get("root", {}).get("path")
    return str(Path(root).parent) if root else None


async def notify_restored(
    socket_path: Path, timeout_s: float = 10.0, *, seed: str | None = None
) -> dict[str, Any]:
    """Send the agent a ``restored`` control frame (with ``seed`` if given); returns its ``ack`` header."""
    return await AgentClient(socket_path).notify_restored(timeout_s=timeout_s, seed=seed)
