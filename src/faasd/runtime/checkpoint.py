"""CRIU checkpoint/restore of sandboxes through runc.

``checkpoint`` captures a running sandbox *consistently*: its processes and its overlay upper at one
instant. When CRIU runs directly (:mod:`faasd.runtime.criu_dump`), CRIU stops the processes itself and
calls faasd back at its post-dump action, while they are still stopped, to copy the upper; CRIU
resumes them once the copy is done. Otherwise (through runc, or a paused sandbox) the container is
frozen first (its cgroup freezer, written directly: :mod:`faasd.runtime.criu_freeze`; what ``runc
pause`` does, minus a runc process), dumped with ``runc checkpoint --leave-running`` (CRIU keeps the
cgroup frozen because it found it frozen), its upper copied, then thawed. Files therefore match what
the dumped processes had open -- CRIU refuses to restore when an open file changed size after the
dump.

``restore`` starts a *new* sandbox from such a capture: a fresh overlay whose read-only lowers are
the image layers plus the snapshot's upper dir(s) (copy-on-write: every copy gets its own empty
upper, nothing is copied; a branch of a branch just adds one more lower), a fresh network namespace
(runc does not save it; one per copy), the dumped config.json with this sandbox's paths, stdio on
pipes (CRIU cannot restore a host file as stdout), then ``runc restore --detach``. If the sandbox
runs a faasd agent (``io/agent.sock`` exists), the agent is told it was restored (it reseeds PRNGs
and runs ``after_restore`` hooks): every copy of one image starts with identical memory, including
``random``'s state.

Layout of a capture directory (what ``faasd.snapshots`` stores)::

    criu/            CRIU image dir (pages-*.img, core-*.img, descriptors.json, ...)
    upper/           copy of the overlay upper at the instant of the dump
    bundle/config.json
    checkpoint.json  sandbox id, lowers, timings

CRIU work dirs (logs): ``<run_dir>/criu-work/<sandbox-id>-<n>/`` during a restore,
``<bundle>/criu-dump-<pid>-<n>/`` during a dump, locked while in use (:mod:`faasd.runtime.criu_work`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.errors import (
    ConflictError,
    FaasdError,
    InvalidInputError,
    RuntimeFailure,
    StorageFullError,
)
from faasd.rootfs import mounts
from faasd.runtime import criu_cli, criu_dump, gvisor_checkpoint
from faasd.runtime.agent_client import AgentClient
from faasd.runtime.checkpointable import Checkpointable, CheckpointSource, checkpoint_source
from faasd.runtime.criu_conf import cgroup_yard, criu_annotations
from faasd.runtime.criu_freeze import freeze, thaw
from faasd.runtime.criu_work import DUMP_WORK_PREFIX, RESTORE_WORK_DIR, make_work_dir, remove_work_dir
from faasd.runtime.models import SANDBOX_ID_RE, Limits, NetworkSpec, SandboxSpec, UserNamespace
from faasd.runtime.runc_state import RUNC_STATE_NAME, RestoreSource
from faasd.runtime.sandbox import OUTPUT_LIMIT_BYTES, Sandbox, SandboxManager

CRIU_OPTS: dict[str, bool] = {"tcp_established": True, "file_locks": True, "ext_unix_sk": True}
"""CRIU options used for both dump and restore (they must match)."""

IO_DIR_NAME = "io"
AGENT_SOCKET = "agent.sock"


@dataclass
class Checkpoint:
    """A consistent capture of one sandbox, as directories under ``root``."""

    root: Path
    criu: Path
    upper: Path
    bundle: Path
    sandbox_id: str
    lowers: list[Path]
    timings_ms: dict[str, float]
    leave_running: bool
    dumped_by: str = "runc"
    """``criu`` (CRIU run directly: :mod:`faasd.runtime.criu_dump`), ``runc`` (``runc checkpoint``) or
    ``runsc`` (gVisor's own checkpoint)."""

    @property
    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.bundle / "config.json").read_text())
        return data

    @property
    def isolation(self) -> str:
        """``runc`` (``criu`` holds CRIU images) or ``gvisor`` (``criu`` holds runsc's checkpoint.img)."""
        return gvisor_checkpoint.isolation_of_config(self.config)


def source_of(sandbox: Checkpointable | CheckpointSource) -> CheckpointSource:
    """Adapt a sandbox (``faasd.runtime.sandbox.Sandbox``, created or restored: a
    :class:`~faasd.runtime.checkpointable.Checkpointable`)."""
    if isinstance(sandbox, CheckpointSource):
        return sandbox
    return checkpoint_source(sandbox)


def _is_enospc_text(text: str) -> bool:
    return "No space left on device" in text or "ENOSPC" in text


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def checkpoint(
    sandbox: Checkpointable | CheckpointSource,
    dest: Path,
    *,
    leave_running: bool = True,
    criu_opts: dict[str, bool] | None = None,
) -> Checkpoint:
    """Freeze, dump with CRIU, copy the overlay upper, thaw. ``dest`` must not exist yet. (For a running
    sandbox dumped by CRIU directly, CRIU freezes and resumes it and the copy runs in its post-dump
    call-back: :mod:`faasd.runtime.criu_dump`.) ``timings_ms["frozen"]``: how long it stood still.

    On any failure ``dest`` is removed and the sandbox is thawed again (it keeps running when
    ``leave_running``). A full disk raises :class:`StorageFullError`.
    """
    src = source_of(sandbox)
    if src.runtime.name == "runsc":
        # gVisor's own checkpoint (the sentry, no CRIU): the sandbox stops (faasd.runtime.gvisor_checkpoint)
        dest = Path(dest)
        image, upper, bundle, gv_timings = await gvisor_checkpoint.checkpoint_gvisor(
            src, dest, leave_running=leave_running, copy_upper=copy_upper
        )
        return _finish(dest, src, image, upper, bundle, gv_timings, leave_running=False, dumped_by="runsc")
    if src.upper is None:
        raise InvalidInputError(
            f"sandbox {src.id} has no overlay upper (flat-copy rootfs): it cannot be "
            "snapshotted; check that overlayfs works on the data dir"
        )
    dest = Path(dest)
    if dest.exists():
        raise InvalidInputError(f"checkpoint destination {dest} already exists")
    opts = dict(CRIU_OPTS if criu_opts is None else criu_opts)
    criu_dir, upper_dir, bundle_dir = dest / "criu", dest / "upper", dest / "bundle"
    # CRIU's work dir (logs) lives in the sandbox bundle (run_dir), not on the possibly full data disk
    work = src.bundle / f"{DUMP_WORK_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    work_fd: int | None = None
    timings: dict[str, float] = {}
    state = (await src.runtime.state(src.id)).get("status")
    if state not in ("running", "paused"):
        raise ConflictError(
            f"sandbox {src.id} is {state}; only a running or paused sandbox can be snapshotted"
        )
    paused_by_us = False
    cgroup_yard()  # before the freeze: CRIU's kernel probes cached, its cgroup yard ready
    record = None
    if src.criu_direct and leave_running and src.runtime.name == "runc":
        record = criu_dump.read_record(src.runtime.root, src.id)
    direct = criu_dump.eligible(record)
    # CRIU stops a running sandbox itself and calls back to copy its files: its start-up and exit stay
    # outside the window the sandbox stands still
    called_back = direct and state == "running" and criu_dump.can_call_back()
    copied: list[float] = []

    upper = src.upper

    async def copy_while_stopped() -> None:
        copied.append(time.perf_counter())
        await asyncio.to_thread(copy_upper, upper, upper_dir)
        copied.append(time.perf_counter())

    t0 = time.perf_counter()
    try:
        dest.mkdir(parents=True)
        criu_dir.mkdir()
        work_fd = make_work_dir(work)
        if state == "running" and not called_back:
            paused_by_us = True  # a failed freeze is thawed too
            await freeze(src.runtime, src.id)
        t1 = time.perf_counter()
        timings["freeze"] = (t1 - t0) * 1000
        try:
            if record is not None and direct:
                await criu_dump.dump(
                    record, image_path=criu_dir, work_path=work, criu_opts=opts, criu_binary=src.criu_binary,
                    while_frozen=copy_while_stopped if called_back else None,
                )
            else:
                await src.runtime.checkpoint(
                    src.id, criu_dir, work_path=work, leave_running=leave_running,
                    tcp_established=opts.get("tcp_established", False),
                    file_locks=opts.get("file_locks", False), ext_unix_sk=opts.get("ext_unix_sk", False),
                )
        except RuntimeFailure as exc:
            log = _read(work / "dump.log")
            if _is_enospc_text(log) or _is_enospc_text(str(exc)) or _free_bytes(dest) < 1024 * 1024:
                raise StorageFullError(
                    f"no space left in {dest.parent} while checkpointing sandbox {src.id}; the sandbox "
                    "keeps running. Free space (delete snapshots, gc) or enlarge the data dir.",
                    sandbox=src.id,
                ) from exc
            raise RuntimeFailure(
                f"CRIU checkpoint of sandbox {src.id} failed: {exc.message}\n{_tail(log)}", sandbox=src.id
            ) from exc
        t2 = time.perf_counter()
        if called_back:
            # dump: CRIU until its call-back; copy_upper: the copy while stopped; thaw: CRIU's resume and
            # exit after the answer. frozen: CRIU's own measure of how long the tasks stood still.
            timings["dump"] = (copied[0] - t1) * 1000
            timings["copy_upper"] = (copied[1] - copied[0]) * 1000
            timings["thaw"] = (t2 - copied[1]) * 1000
            stats = criu_cli.read_dump_stats(work)
            if "frozen_us" in stats:
                timings["criu_frozen"] = stats["frozen_us"] / 1000
                timings["frozen"] = (stats.get("freezing_us", 0) + stats["frozen_us"]) / 1000
            else:  # no statistics from CRIU: its whole run bounds how long the tasks stood still
                timings["frozen"] = (t2 - t1) * 1000
        else:
            timings["dump"] = (t2 - t1) * 1000
            await asyncio.to_thread(copy_upper, upper, upper_dir)
        bundle_dir.mkdir()
        shutil.copy2(src.bundle / "config.json", bundle_dir / "config.json")
        with contextlib.suppress(OSError):  # runc's record: lets a restore run CRIU without runc
            shutil.copy2(src.runtime.root / src.id / "state.json", bundle_dir / RUNC_STATE_NAME)
        t3 = time.perf_counter()
        if not called_back:
            timings["copy_upper"] = (t3 - t2) * 1000
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if paused_by_us and leave_running:
            with contextlib.suppress(RuntimeFailure):
                await thaw(src.runtime, src.id)
        remove_work_dir(work, work_fd)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(
                f"no space left in {dest.parent} while copying the upper of sandbox {src.id}; the sandbox "
                "keeps running. Free space (delete snapshots, gc) or enlarge the data dir.",
                sandbox=src.id,
            ) from exc
        raise
    remove_work_dir(work, work_fd)
    if paused_by_us and leave_running:
        await thaw(src.runtime, src.id)
    t4 = time.perf_counter()
    if not called_back:
        timings["thaw"] = (t4 - t3) * 1000
        timings["frozen"] = (t4 - t0) * 1000 if state == "running" else 0.0
    timings["total"] = (t4 - t0) * 1000
    return _finish(
        dest, src, criu_dir, upper_dir, bundle_dir, timings, leave_running=leave_running,
        dumped_by="criu" if direct else "runc",
    )


def _finish(
    dest: Path,
    src: CheckpointSource,
    image: Path,
    upper: Path,
    bundle: Path,
    timings: dict[str, float],
    *,
    leave_running: bool,
    dumped_by: str,
) -> Checkpoint:
    info = {
        "sandbox": src.id,
        "lowers": [str(p) for p in src.lowers],
        "timings_ms": timings,
        "leave_running": leave_running,
        "dumped_by": dumped_by,
        "isolation": gvisor_checkpoint.isolation_of_runtime(src.runtime.name),
    }
    (dest / "checkpoint.json").write_text(json.dumps(info))
    return Checkpoint(
        root=dest,
        criu=image,
        upper=upper,
        bundle=bundle,
        sandbox_id=src.id,
        lowers=list(src.lowers),
        timings_ms=timings,
        leave_running=leave_running,
        dumped_by=dumped_by,
    )


def copy_upper(upper: Path, dest: Path) -> None:
    """Exact copy of an overlay upper: whiteouts (char 0/0), opaque xattrs, owners, hard links, mtimes."""
    res = subprocess.run(
        ["cp", "-a", "--preserve=all", "--no-target-directory", str(upper), str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        if _is_enospc_text(res.stderr):
            raise OSError(errno.ENOSPC, f"no space left copying {upper}: {res.stderr.strip()}")
        raise RuntimeFailure(f"copying the overlay upper {upper} failed: {res.stderr.strip()}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------------------- restore
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
            log = _read(work / "restore.log")
            engine = "gVisor (runsc)" if kind == gvisor_checkpoint.GVISOR else "CRIU"
            raise RuntimeFailure(
                f"{engine} restore of sandbox {new_id} failed: {exc.message}\n{_tail(log)}", sandbox=new_id
            ) from exc
        raise
    finally:
        remove_work_dir(work, work_fd)
    t2 = time.perf_counter()
    timings["restore"] = (t2 - t0) * 1000 - timings.get("prepare", 0.0)  # runc restore or criu restore
    ack = None
    try:
        _publish_agent_socket(sb.io_dir)
        if notify_agent and (sb.io_dir / AGENT_SOCKET).exists():
            ack = await notify_restored(sb.io_dir / AGENT_SOCKET, agent_timeout_s, seed=seed)
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
    final = io_dir / AGENT_SOCKET
    if final.exists():
        return
    for p in sorted(io_dir.glob(AGENT_SOCKET + ".*")):
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
