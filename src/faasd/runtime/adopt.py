"""Re-adopting sandboxes that a previous daemon process left running (kill -9, OOM kill, restart, upgrade).

Sandboxes are independent runc containers: when the daemon dies its children (the container inits, it is
their subreaper) are re-parented, and their mounts, cgroups, network namespaces, user-namespace ranges
(``O_EXCL`` lock files in ``/run/faasd-userns/alloc``) and egress /30s stay where they are. What is lost
is the daemon's memory. An owner that wants its sandbox to outlive the daemon writes an *adoption record*
next to the bundle (:func:`write_record`: the :class:`SandboxSpec`, plus the owner's own data), and the
next daemon calls :func:`adopt` for it:

* the container is looked up with ``runc state`` (its init pid is checked by runc against the start time
  it recorded, so a recycled pid is never adopted);
* the rootfs (:meth:`OverlayRootfs.attach`), the user namespace (the range the lock files still hold for
  this id, checked against config.json: it is *not* allocated again), the pinned netns and the egress link
  are re-attached, nothing is re-created;
* the :class:`Sandbox` object is registered with the manager (and the process-wide live registry), so
  ``cleanup_orphans`` leaves it alone, and its exit is watched with a pidfd (it is not our child any more:
  the exit code is unknown, an OOM kill is read from its memory cgroup).

A container that exited while no daemon was running (``runc state`` says ``stopped``) or that was created
but never started is returned as ``exited``/``created`` with its rootfs still mounted, so the owner can
keep its writable layer before it destroys the sandbox. Sandboxes without a record (pool workers, one-off
executions) are not adopted: ``cleanup_orphans`` removes them as before.

The container's stdio pipes ended with the old daemon; an adopted sandbox has no stdio (``stdout()`` is
empty). Sandboxes meant to be adopted must therefore not depend on writing to their init's stdout: the
owners that write records (instances: ``faasd-init`` never writes; restored workers' agents write their
invocations' output over the agent socket) satisfy that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from faasd.errors import RuntimeFailure
from faasd.rootfs import OverlayRootfs
from faasd.runtime import cgroups, network, userns
from faasd.runtime.models import BindMount, ExitStatus, Limits, NetworkSpec, SandboxSpec, UserNamespace
from faasd.runtime.runc import ContainerNotFound
from faasd.runtime.sandbox import Sandbox, SandboxManager
from faasd.runtime.sandbox.registry import LIVE
from faasd.runtime.spec import ProcessUser

log = logging.getLogger(__name__)

RECORD_FILE = "faasd-adopt.json"
"""The adoption record in a sandbox's bundle dir (root-only, not visible inside the sandbox)."""
RECORD_VERSION = 1


# ------------------------------------------------------------------------------ spec (de)serialisation
@dataclass(frozen=True)
class SavedImageConfig:
    """The parts of an image config a :class:`SandboxSpec` reads (``ImageConfigLike``), as recorded."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None


def spec_to_dict(spec: SandboxSpec) -> dict[str, Any]:
    """A JSON-able form of ``spec`` (:func:`spec_from_dict` reads it back)."""
    ic = spec.image_config
    return {
        "id": spec.id,
        "lowers": [str(p) for p in spec.lowers],
        "args": list(spec.args) if spec.args is not None else None,
        "image_config": None
        if ic is None
        else {
            "entrypoint": list(ic.entrypoint) if ic.entrypoint is not None else None,
            "cmd": list(ic.cmd) if ic.cmd is not None else None,
            "env": list(ic.env) if ic.env is not None else None,
            "working_dir": ic.working_dir,
            "user": ic.user,
        },
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "user": spec.user,
        "limits": asdict(spec.limits),
        "network": {"mode": spec.network.mode, "ports": list(spec.network.ports)},
        "mounts": [
            {"source": str(m.source), "target": m.target, "readonly": m.readonly} for m in spec.mounts
        ],
        "runtime": spec.runtime,
        "hostname": spec.hostname,
        "readonly_rootfs": spec.readonly_rootfs,
        "annotations": dict(spec.annotations),
        "userns": spec.userns,
    }


def spec_from_dict(data: Mapping[str, Any]) -> SandboxSpec:
    ic = data.get("image_config")
    net = data.get("network") or {}
    return SandboxSpec(
        id=str(data["id"]),
        lowers=[Path(p) for p in data.get("lowers") or []],
        args=list(data["args"]) if data.get("args") is not None else None,
        image_config=SavedImageConfig(**ic) if ic is not None else None,
        env=dict(data.get("env") or {}),
        cwd=data.get("cwd"),
        user=data.get("user"),
        limits=Limits(**(data.get("limits") or {})),
        network=NetworkSpec(mode=net.get("mode", "none"), ports=tuple(net.get("ports") or ())),
        mounts=[
            BindMount(Path(m["source"]), str(m["target"]), bool(m.get("readonly", True)))
            for m in data.get("mounts") or []
        ],
        runtime=data.get("runtime", "runc"),
        hostname=data.get("hostname"),
        readonly_rootfs=bool(data.get("readonly_rootfs", False)),
        annotations=dict(data.get("annotations") or {}),
        userns=data.get("userns"),
    )


# -------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class AdoptRecord:
    """What the daemon that created a sandbox left for the next one: who owns it, and its spec."""

    owner: str
    """``instance`` or ``restored`` (the platform service that re-adopts it)."""
    spec: SandboxSpec
    data: dict[str, Any] = field(default_factory=dict)
    """The owner's own data (e.g. the instance id)."""


def write_record(sb: Sandbox, owner: str, data: Mapping[str, Any] | None = None) -> None:
    """Mark ``sb`` as adoptable by ``owner`` after a daemon restart (atomic write into its bundle)."""
    payload = {
        "version": RECORD_VERSION,
        "owner": owner,
        "data": dict(data or {}),
        "spec": spec_to_dict(sb.spec),
    }
    tmp = sb.bundle / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(payload))
    tmp.replace(sb.bundle / RECORD_FILE)


def read_record(bundle: Path) -> AdoptRecord | None:
    """The adoption record of the sandbox in ``bundle`` (None: none, or unreadable)."""
    try:
        payload = json.loads((bundle / RECORD_FILE).read_text())
        if payload.get("version") != RECORD_VERSION:
            log.warning(
                "adoption record of %s has version %s; not adopted", bundle.name, payload.get("version")
            )
            return None
        spec = spec_from_dict(payload["spec"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable adoption record in %s (%s); the sandbox is not adopted", bundle, exc)
        return None
    if spec.id != bundle.name:
        log.warning("adoption record in %s names sandbox %s; not adopted", bundle, spec.id)
        return None
    return AdoptRecord(str(payload.get("owner") or ""), spec, dict(payload.get("data") or {}))


def find_records(manager: SandboxManager, owner: str | None = None) -> dict[str, AdoptRecord]:
    """Adoption records under the manager's run_dir by sandbox id (only ``owner``'s if given)."""
    out: dict[str, AdoptRecord] = {}
    try:
        bundles = sorted(manager.sandboxes_dir.iterdir())
    except FileNotFoundError:
        return out
    for bundle in bundles:
        if not bundle.name.startswith("fd-") or not bundle.is_dir():
            continue
        rec = read_record(bundle)
        if rec is not None and (owner is None or rec.owner == owner):
            out[bundle.name] = rec
    return out


# ---------------------------------------------------------------------------------------------- adopt
AdoptedState = Literal["running", "paused", "exited", "created"]


@dataclass
class Adopted:
    """A sandbox found again. ``running``/``paused``: live and watched again. ``exited``: it ended while
    no daemon was running (``oom_killed`` from its memory cgroup); ``created``: it was never started. For
    those two the rootfs is still mounted (``sandbox.rootfs.upper``) until ``sandbox.destroy()``."""

    sandbox: Sandbox
    state: AdoptedState
    oom_killed: bool = False


async def adopt(manager: SandboxManager, record: AdoptRecord) -> Adopted | None:
    """Re-attach the sandbox of ``record`` (see the module doc). None when nothing of it is left to adopt
    (no bundle, or its rootfs is gone): then its writable layer is gone too; ``cleanup_orphans`` removes
    whatever else remains. Raises :class:`RuntimeFailure` if the sandbox is already owned here."""
    spec = record.spec
    bundle = manager.sandboxes_dir / spec.id
    if manager._owns(spec.id):
        raise RuntimeFailure(f"sandbox {spec.id} is already owned by this daemon; it cannot be adopted twice")
    if not (bundle / "config.json").is_file():
        return None
    runtime = manager.runtime(spec.runtime)
    try:
        state: dict[str, Any] | None = await runtime.state(spec.id)
    except ContainerNotFound:
        state = None
    except RuntimeFailure as exc:
        log.warning("runc state of %s failed (%s); treating it as exited", spec.id, exc)
        state = None
    try:
        rootfs = await asyncio.to_thread(OverlayRootfs.attach, bundle)
    except RuntimeFailure as exc:
        log.warning("sandbox %s cannot be adopted: %s", spec.id, exc)
        return None
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"sandbox {spec.id} cannot be adopted: unreadable config.json ({exc})") from exc
    sb = Sandbox(manager, spec, bundle, runtime)
    sb.rootfs = rootfs
    sb.userns = _user_namespace(spec.id, config)
    netns = network.netns_path(spec.id)
    sb.netns = netns if netns.exists() else None
    sb.egress = network.egress_link(spec.id)
    proc_user = config.get("process", {}).get("user", {})
    sb.user = ProcessUser(int(proc_user.get("uid", 0)), int(proc_user.get("gid", 0)))
    manager._sandboxes[spec.id] = sb
    LIVE[(str(manager.settings.run_dir), spec.id)] = sb
    status = str(state.get("status")) if state is not None else "stopped"
    pid = int(state.get("pid") or 0) if state is not None else 0
    now = time.monotonic()
    if status in ("running", "paused") and pid > 0 and _alive(pid):
        sb.pid = pid
        sb._status = "running"
        sb._paused = status == "paused"
        sb.started_at = now
        sb._waiter = asyncio.ensure_future(sb._watch())
        log.info("re-adopted sandbox %s (%s, init pid %d)", spec.id, status, pid)
        return Adopted(sb, "running" if status == "running" else "paused")
    oom = await asyncio.to_thread(cgroups.oom_kills, spec.id) > 0
    sb.pid = pid or None
    sb.exited_at = now
    sb._status = "created" if status == "created" else "running"
    # no live process of ours to wait for: destroy() goes straight to the teardown (runc delete --force)
    sb._exit = ExitStatus(137 if oom else -1, oom_killed=oom)
    got: AdoptedState = "created" if status == "created" else "exited"
    log.info("sandbox %s %s while no daemon was running", spec.id, "was never started" if got == "created"
             else "exited")
    return Adopted(sb, got, oom_killed=oom)


def _user_namespace(sandbox_id: str, config: Mapping[str, Any]) -> UserNamespace | None:
    """The sandbox's user namespace: the range its lock files still hold (not allocated again)."""
    configured = UserNamespace.from_config(config)
    if configured is None:
        return None
    held = userns.allocated(sandbox_id)
    if held != configured:
        # the lock files disagree with the running container: never hand its range to another sandbox
        raise RuntimeFailure(
            f"sandbox {sandbox_id} runs with user namespace range {configured.host_id}+{configured.size} but "
            f"the allocation says {held}; refusing to adopt it (inspect /run/faasd-userns/alloc)"
        )
    return configured


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next((ln for ln in f if ln.startswith("State:")), "")
    except OSError:
        return False
    return "Z" not in state.split()[1:2]


async def release(sb: Sandbox) -> None:
    """Let go of a live sandbox without stopping it (daemon shutdown that keeps sandboxes running): its
    host-side proxies and stdio pipes are closed, its exit is no longer watched, and the manager forgets
    it. The container, its mounts, cgroups and namespaces stay; the next daemon adopts it again."""
    for p in sb._proxies:
        with contextlib.suppress(Exception):
            await p.close()
    sb._proxies.clear()
    if sb._waiter is not None and not sb._waiter.done():
        sb._waiter.cancel()
        with contextlib.suppress(BaseException):
            await sb._waiter
    sb.close_stdin()
    for t in sb._transports:
        t.close()
    sb._transports.clear()
    sb.manager._forget(sb)


def record_path(sb: Sandbox) -> Path:
    return sb.bundle / RECORD_FILE


def remove_record(sb: Sandbox) -> None:
    """The sandbox is no longer meant to outlive the daemon (e.g. it is being stopped)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(sb))
