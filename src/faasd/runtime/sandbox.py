"""Sandboxes: one runc container on an overlay rootfs in its own netns and cgroup, with cleanup on every path.

::

    manager = SandboxManager(settings)
    sb = await manager.create(spec)          # overlay + netns + bundle + runc create (undone on failure)
    await sb.start()
    status = await sb.wait()                 # ExitStatus(exit_code, oom_killed, timed_out, signal)
    await sb.destroy()                       # idempotent

    result = await manager.run(spec, stdin=b"", timeout_s=5)   # all of the above in one call

Bundle layout (``run_dir/sandboxes/<id>/``): ``config.json``, ``rootfs/`` (merged overlay), ``scratch/``
(size-bounded fs with ``upper/`` and ``work/``), ``io/`` (a 1 MiB tmpfs bind-mounted read-write at
``/run/faasd-io``), ``init.pid``, ``runc.log``. Every mount under the bundle is undone on teardown
(``OverlayRootfs.unmount_dir(bundle)``, also used by :meth:`SandboxManager.cleanup_orphans`).

The container's stdio are pipes owned by the :class:`Sandbox`; stdout/stderr are drained continuously
into bounded buffers (and passed to ``on_output`` if given) so a chatty process never blocks.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import errno
import json
import logging
import os
import shutil
import signal as _signal
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.errors import (
    ConflictError,
    FaasdError,
    InvalidInputError,
    ResourceLimitError,
    RuntimeFailure,
    StorageFullError,
    pids_exhausted,
)
from faasd.rootfs import OverlayRootfs, idmap
from faasd.rootfs import mounts as _mounts
from faasd.runtime import cgroups, ksm, network, reaper, userns
from faasd.runtime.models import (
    AGENT_DIR_IN_CONTAINER,
    IO_DIR_IN_CONTAINER,
    SECRETS_DIR_IN_CONTAINER,
    BindMount,
    ExecResult,
    ExitStatus,
    Limits,
    NetworkSpec,
    RunResult,
    SandboxInfo,
    SandboxSpec,
    UserNamespace,
)
from faasd.runtime.proxy import LoopbackProxy, open_connection_in_netns
from faasd.runtime.runc import ContainerNotFound, OciRuntime, make_runtime, read_log_errors
from faasd.runtime.spec import ContainerPaths, ProcessUser, build_config, resolve_user

__all__ = [
    "AGENT_DIR_IN_CONTAINER",
    "IO_DIR_IN_CONTAINER",
    "SECRETS_DIR_IN_CONTAINER",
    "BindMount",
    "ExecResult",
    "ExitStatus",
    "Limits",
    "NetworkSpec",
    "RunResult",
    "Sandbox",
    "SandboxInfo",
    "SandboxManager",
    "SandboxSpec",
    "raise_for_limits",
]

log = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024
"""Per stream; output beyond it is dropped (``Sandbox.output_truncated`` tells)."""

OutputCallback = Callable[[str, bytes], None]

# (run_dir, id) -> live Sandbox, across managers of this process (cleanup_orphans must not touch them)
_LIVE: weakref.WeakValueDictionary[tuple[str, str], Sandbox] = weakref.WeakValueDictionary()


def raise_for_limits(status: ExitStatus | RunResult, limits: Limits) -> None:
    """Raise :class:`ResourceLimitError` naming the limit the sandbox hit (pids, memory or wall-clock)."""
    if status.pids_exhausted:
        raise pids_exhausted(limits.pids, "the sandbox")
    if status.oom_killed:
        mem = f"{limits.memory_mb} MiB" if limits.memory_mb is not None else "the host's memory"
        raise ResourceLimitError(
            f"memory limit of {mem} exceeded: the process was killed by the OOM killer; "
            "raise the memory limit or reduce the function's memory use",
            limit="memory",
            memory_mb=limits.memory_mb,
        )
    if status.timed_out:
        t = f"{limits.timeout_s:g} s" if limits.timeout_s is not None else "the deadline"
        raise ResourceLimitError(
            f"wall-clock timeout of {t} exceeded: the process was killed; "
            "raise the timeout or make it faster",
            limit="timeout",
            timeout_s=limits.timeout_s,
        )


class _Collector(asyncio.Protocol):
    def __init__(self, name: str, limit: int, on_output: OutputCallback | None) -> None:
        self.name = name
        self.limit = limit
        self.on_output = on_output
        self.buf = bytearray()
        self.truncated = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.on_output is not None:
            try:
                self.on_output(self.name, data)
            except Exception:  # a broken callback must not stop the draining
                log.exception("on_output callback failed")
        room = self.limit - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        if len(data) > room:
            self.truncated = True

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _factory(col: _Collector) -> Callable[[], _Collector]:
    return lambda: col


PIDS_POLL_S = 0.02
"""How often the pids counter (``pids.events``, one ``pread`` of ~2 us) is read while a request is watched:
a fork bomb is seen at most this long after the limit is hit, then killed."""


async def pids_limit_hit(counter: cgroups.PidsCounter, baseline: int, interval: float = PIDS_POLL_S) -> float:
    """Return once the sandbox's pids counter rises above ``baseline`` (a fork failed on the pids limit):
    the ``time.monotonic()`` when that was seen. Never returns while the limit is not hit."""
    while True:
        await asyncio.sleep(interval)
        if counter.read() > baseline:
            return time.monotonic()


async def _read_bounded(stream: asyncio.StreamReader | None, limit: int | None) -> tuple[bytes, bool]:
    """Read ``stream`` to EOF keeping the first ``limit`` bytes (all if None); True if some were dropped."""
    if stream is None:
        return b"", False
    buf = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = len(chunk) if limit is None else limit - len(buf)
        if room > 0:
            buf += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return bytes(buf), truncated


IO_DIR_TMPFS_OPTIONS = "size=1m,nr_inodes=64,mode=0755"
"""The bundle's ``io/`` dir (read-write at ``/run/faasd-io``, holds only the agent's Unix socket) is its own
tiny tmpfs, so a sandbox cannot write past disk_mb/tmp_mb onto the host's run_dir filesystem through it."""


def _mount_io_dir(io_dir: Path) -> None:
    _mounts.mount(
        "faasd-io", io_dir, "tmpfs", _mounts.MS_NOSUID | _mounts.MS_NODEV | _mounts.MS_NOEXEC,
        IO_DIR_TMPFS_OPTIONS,
    )


BINDS_ANNOTATION = "faasd.userns.binds"
"""config.json annotation of a sandbox with a user namespace: ``{destination: original source}`` of its
idmapped binds (sources inside the bundle as ``@bundle/<path>``), so a restore can idmap them again."""


def _idmap_binds(sb: Sandbox, binds: Sequence[tuple[str, Path]]) -> dict[str, Path]:
    """For a sandbox with a user namespace: an idmapped view of every bind source under ``<bundle>/binds/``
    (files owned by host root show as the sandbox's root, as without a user namespace). A source on a
    filesystem without idmap support is bound as it is (its files then show as ``nobody`` inside)."""
    ns = sb.userns
    if ns is None:
        return {}
    out: dict[str, Path] = {}
    base = userns.stage_dir(sb.id) / "binds"
    base.mkdir(mode=0o711, exist_ok=True)
    for i, (dest, source) in enumerate(binds):
        target = base / str(i)
        if Path(source).is_dir():
            target.mkdir()
        else:
            target.touch()
        try:
            idmap.bind_idmapped(source, target, idmap.IdMap(ns.host_id, ns.size, userns.userns_path(sb.id)))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            log.warning("bind source %s cannot be idmapped (%s); its files show as nobody in %s",
                        source, exc, sb.id)
            continue
        out[dest] = target
    return out


def _stage_root(sb: Sandbox) -> Path:
    """The merged rootfs bound at a path runc can resolve from inside the user namespace."""
    assert sb.rootfs is not None
    target = userns.stage_dir(sb.id) / "rootfs"
    target.mkdir(mode=0o755)
    _mounts.mount(str(sb.rootfs.path), target, None, _mounts.MS_BIND)
    return target


def _bind_origins(sb: Sandbox, binds: Sequence[tuple[str, Path]]) -> dict[str, str]:
    out = {}
    for dest, source in binds:
        src = str(source)
        if src == str(sb.bundle) or src.startswith(f"{sb.bundle}/"):
            src = "@bundle" + src[len(str(sb.bundle)) :]
        out[dest] = src
    return out


def _restore_userns(sb: Sandbox, config: Mapping[str, Any]) -> dict[str, Any]:
    """The restore config with this sandbox's user namespace (the dumped one has the range of the sandbox
    the snapshot was taken from, or none: then this sandbox must have none either).

    For a sandbox with one: the mappings become its own range, the netns loses its path (CRIU restores the
    dumped netns inside the user namespace it re-creates; the manager pins it afterwards), and the root and
    the bind sources are idmapped again for the new range (their original sources are in the
    ``faasd.userns.binds`` annotation).
    """
    cfg = json.loads(json.dumps(config))
    dumped = UserNamespace.from_config(cfg)
    if (dumped is None) != (sb.userns is None):
        had = "with" if dumped is not None else "without"
        raise InvalidInputError(
            f"the snapshot was taken {had} a user namespace; restore it with SandboxSpec.userns="
            f"{dumped is not None}"
        )
    if sb.userns is None:
        return cfg
    linux = cfg["linux"]
    linux.update(sb.userns.oci_mappings())
    linux["namespaces"] = [
        {"type": n["type"]} if n.get("type") in ("network", "user") else n
        for n in linux.get("namespaces", [])
    ]
    # CRIU makes that netns empty (runc dumps it as "empty"): bring lo up before it restores sockets (a
    # loopback TCP connection reconnects at once); runc runs prestart hooks at CRIU's setup-namespaces
    hooks = cfg.setdefault("hooks", {})
    hooks["prestart"] = [*(h for h in hooks.get("prestart", []) if h != LO_UP_HOOK), LO_UP_HOOK]
    cfg["root"]["path"] = str(_stage_root(sb))
    origins = json.loads(cfg.get("annotations", {}).get(BINDS_ANNOTATION, "{}"))
    binds = [
        (dest, sb.bundle / src[len("@bundle/"):] if src.startswith("@bundle/") else Path(src))
        for dest, src in origins.items()
    ]
    sources = _idmap_binds(sb, binds)
    for m in cfg.get("mounts", []):
        if m.get("destination") in sources:
            m["source"] = str(sources[m["destination"]])
    _make_mountpoints(sb, cfg)
    return cfg


LO_UP_HOOK = {
    "path": "/bin/sh",
    "args": [
        "sh", "-c",
        "pid=$(grep -o '\"pid\":[0-9]*' | cut -d: -f2) && exec nsenter -t \"$pid\" -n ip link set lo up",
    ],
    "timeout": 10,
}
"""OCI prestart hook (reads the state JSON with the pid on stdin): ``lo`` up in the restored netns."""


def _make_mountpoints(sb: Sandbox, cfg: Mapping[str, Any]) -> None:
    """Create the bind mount points in the root before ``runc restore`` does: runc makes them as host root,
    which the idmapped upper refuses (EOVERFLOW: host id 0 is outside the sandbox's range); made with the
    range's root as fsuid they are owned by root inside, as if the sandbox had made them."""
    assert sb.rootfs is not None and sb.userns is not None
    root = sb.rootfs.path

    def make() -> None:
        for m in cfg.get("mounts", []):
            dest = str(m.get("destination", "")).lstrip("/")
            if m.get("type") != "bind" or not dest or ".." in Path(dest).parts:
                continue
            target = root / dest
            if target.exists() or target.is_symlink():
                continue
            if Path(str(m.get("source", ""))).is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()

    idmap.as_mounter(sb.userns.host_id, make)


_RUN_DIR_NEARLY_FULL = 1 << 20
"""Free bytes in run_dir below which a failing ``runc create``/``restore`` is a StorageFullError."""


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62  # cannot tell: not "full"
    return st.f_bavail * st.f_frsize


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        while view:
            n = os.write(fd, view)
            view = view[n:]


@dataclass
class _RestoreJob:
    image_path: Path
    config: Mapping[str, Any] | Callable[[Sandbox], Mapping[str, Any]]
    work_path: Path | None
    criu_opts: dict[str, bool]
    timeout_s: float | None = None
    share_memory: bool = False


class Sandbox:
    """A created container. Obtain from :meth:`SandboxManager.create`; always :meth:`destroy` it."""

    def __init__(self, manager: SandboxManager, spec: SandboxSpec, bundle: Path, runtime: OciRuntime) -> None:
        self.manager = manager
        self.spec = spec
        self.id = spec.id
        self.bundle = bundle
        self.runtime = runtime
        self.io_dir = bundle / "io"
        self.rootfs: OverlayRootfs | None = None
        self.netns: Path | None = None
        self.egress: network.EgressLink | None = None
        self.user: ProcessUser | None = None
        self.userns: UserNamespace | None = None
        """The sandbox's user namespace (also in config.json), ``None`` when it runs without one."""
        self.pid: int | None = None
        self.created_at = time.monotonic()
        self.started_at: float | None = None
        self.exited_at: float | None = None
        self._status = "creating"
        self._paused = False
        self._timed_out = False
        self._exit: ExitStatus | None = None
        self._waiter: asyncio.Task[ExitStatus] | None = None
        self._stdin_fd: int | None = None
        self._collectors: dict[str, _Collector] = {}
        self._transports: list[asyncio.BaseTransport] = []
        self._destroyed = False
        self._destroy_lock = asyncio.Lock()
        self._proxies: list[LoopbackProxy] = []
        self._helper_pids: list[int] = []
        self._pids_baseline: int | None = None
        self._pids_exhausted = False
        self.pids_seen_at: float | None = None
        """``time.monotonic()`` when :meth:`wait` saw the pids limit hit (``watch_pids=True``)."""

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> str:
        """creating | created | running | paused | stopped | destroyed."""
        if self._destroyed:
            return "destroyed"
        if self._exit is not None:
            return "stopped"
        if self._paused:
            return "paused"
        return self._status

    @property
    def config_path(self) -> Path:
        return self.bundle / "config.json"

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._exit

    def stdout(self) -> bytes:
        c = self._collectors.get("stdout")
        return bytes(c.buf) if c else b""

    def stderr(self) -> bytes:
        c = self._collectors.get("stderr")
        return bytes(c.buf) if c else b""

    @property
    def output_truncated(self) -> bool:
        return any(c.truncated for c in self._collectors.values())

    @property
    def stdout_truncated(self) -> bool:
        c = self._collectors.get("stdout")
        return c is not None and c.truncated

    @property
    def stderr_truncated(self) -> bool:
        c = self._collectors.get("stderr")
        return c is not None and c.truncated

    def oom_kills(self) -> int:
        return cgroups.oom_kills(self.id)

    def cgroup_read(self, controller: str, name: str) -> str | None:
        """A file of the sandbox's cgroup, e.g. ``("memory", "memory.max_usage_in_bytes")``."""
        return cgroups.read(self.id, controller, name)

    async def state(self) -> dict[str, Any]:
        """``runc state`` of the container."""
        return await self.runtime.state(self.id)

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the container's process (``runc start``)."""
        if self._status != "created":
            raise ConflictError(f"sandbox {self.id} is {self.status}; only a created sandbox can be started")
        self._pids_baseline = cgroups.pids_events_max(self.id)
        self.started_at = time.monotonic()
        await self.runtime.start(self.id)
        self._status = "running"

    async def write_stdin(self, data: bytes) -> None:
        if self._stdin_fd is None:
            raise ConflictError(f"stdin of sandbox {self.id} is closed")
        await asyncio.get_running_loop().run_in_executor(None, _write_all, self._stdin_fd, data)

    def close_stdin(self) -> None:
        if self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = None

    async def wait(
        self,
        timeout: float | None = None,
        *,
        use_default_timeout: bool = True,
        kill_on_timeout: bool = True,
        watch_pids: bool = False,
    ) -> ExitStatus:
        """Wait for the main process to exit.

        ``timeout`` defaults to ``limits.timeout_s`` (unless ``use_default_timeout=False``). On timeout the
        sandbox is SIGKILLed (within a few ms of the deadline) and the status has ``timed_out=True``; with
        ``kill_on_timeout=False`` a :class:`TimeoutError` is raised instead. ``watch_pids``: as soon as a
        fork fails on the pids limit (polled every :data:`PIDS_POLL_S`) the sandbox is SIGKILLed and the
        status has ``pids_exhausted=True``.
        """
        if self._waiter is None:
            raise ConflictError(f"sandbox {self.id} has no process to wait for")
        if timeout is None and use_default_timeout:
            timeout = self.spec.limits.timeout_s
        if not watch_pids:
            try:
                return await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
            except TimeoutError:
                if not kill_on_timeout:
                    raise
                return await self._kill_timed_out()
        counter = cgroups.PidsCounter(self.id)
        baseline = self._pids_baseline if self._pids_baseline is not None else counter.read()
        watcher = asyncio.ensure_future(pids_limit_hit(counter, baseline))
        try:
            done, _ = await asyncio.wait(
                {self._waiter, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if self._waiter in done:
                status = self._waiter.result()
                if not status.pids_exhausted and counter.read() > baseline:
                    # the limit was hit, and init ended (taking the rest with it) before the next poll
                    self.pids_seen_at = time.monotonic()
                    self._pids_exhausted = True
                    status = self._exit = dataclasses.replace(status, pids_exhausted=True)
                return status
            if watcher in done:
                self.pids_seen_at = watcher.result()
                self._pids_exhausted = True
                await self.kill()
                return await self._waiter
            if not kill_on_timeout:
                raise TimeoutError
            return await self._kill_timed_out()
        finally:
            watcher.cancel()
            counter.close()

    async def _kill_timed_out(self) -> ExitStatus:
        assert self._waiter is not None
        self._timed_out = True
        await self.kill()
        return await self._waiter

    async def _watch(self) -> ExitStatus:
        assert self.pid is not None
        ended = await reaper.wait_pid(self.pid)
        self.exited_at = time.monotonic()
        oom = cgroups.oom_kills(self.id) > 0
        code = ended.exit_code
        if not ended.reaped:
            # not our child (subreaper unavailable): best effort from the cgroup
            code = 137 if oom else code
        # let the pipes reach EOF (all container processes are gone with init)
        waits = [c.closed for c in self._collectors.values()]
        if waits:
            await asyncio.wait(waits, timeout=1.0)
        self._exit = ExitStatus(
            code, oom_killed=oom, timed_out=self._timed_out, signal=ended.signal,
            pids_exhausted=self._pids_exhausted,
        )
        return self._exit

    async def kill(self, sig: int = _signal.SIGKILL) -> None:
        """Signal the container's init (SIGKILL of init kills the whole pid namespace). No-op once ended."""
        if self.pid is None or self._exit is not None:
            return
        reaper.kill(self.pid, sig)
        if self._paused and sig == _signal.SIGKILL:
            # frozen tasks only die once thawed
            fz = cgroups.controller_dir(self.id, "freezer")
            if fz is not None:
                with contextlib.suppress(OSError):
                    (fz / "freezer.state").write_text("THAWED")
            self._paused = False

    async def pause(self) -> None:
        """Freeze every process of the sandbox (cgroup freezer)."""
        await self.runtime.pause(self.id)
        self._paused = True

    async def resume(self) -> None:
        await self.runtime.resume(self.id)
        self._paused = False

    async def exec(
        self,
        args: Sequence[str],
        *,
        stdin: bytes = b"",
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        output_limit: int | None = None,
        watch_pids: bool = False,
    ) -> ExecResult:
        """Run another process in the running sandbox (same namespaces, limits, seccomp, user).

        ``output_limit``: keep at most that many bytes per stream (the rest is read and dropped;
        ``stdout_truncated``/``stderr_truncated`` tell). ``watch_pids``: if a fork fails on the pids limit
        while the process runs, its process group is killed at once (``pids_exhausted``). ``oom_killed``
        tells whether the OOM killer struck in the sandbox while it ran.
        """
        if self.status not in ("running",):
            raise ConflictError(f"sandbox {self.id} is {self.status}; exec needs a running sandbox")
        pid_file = self.bundle / f"exec-{time.monotonic_ns()}.pid"
        argv = [
            *self.runtime.global_args(),
            *self.runtime.exec_args(self.id, args, env=env, cwd=cwd, user=user, pid_file=pid_file),
        ]
        oom = cgroups.OomCounter(self.id)
        pids = cgroups.PidsCounter(self.id)
        oom_before, pids_before = oom.read(), pids.read()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def feed() -> None:
            assert proc.stdin is not None
            # A process that exits at once closes its stdin pipe before we write: asyncio reports that as
            # BrokenPipe/ConnectionReset, uvloop as a RuntimeError on the closed transport. Either way the
            # process did not want its input, which is not an error of the exec.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                if stdin and not proc.stdin.is_closing():
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

        async def io() -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
            out, err, _ = await asyncio.gather(
                _read_bounded(proc.stdout, output_limit), _read_bounded(proc.stderr, output_limit), feed()
            )
            await proc.wait()
            return out, err

        comm = asyncio.ensure_future(io())
        watcher = asyncio.ensure_future(pids_limit_hit(pids, pids_before)) if watch_pids else None
        timed_out = exhausted = False
        seen_ms: float | None = None
        try:
            done, _ = await asyncio.wait(
                {comm} if watcher is None else {comm, watcher}, timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if comm not in done:
                if watcher is not None and watcher in done:
                    exhausted = True
                    seen_ms = round((watcher.result() - started) * 1000, 3)
                else:
                    timed_out = True
                # Kill the exec'd process *group* in the container (runc makes the process a session
                # leader, so its background children share its pgid and would otherwise keep running and
                # hold the stdio pipes open), then let `runc exec` reap it and exit by itself: killing runc
                # first would hand an unreaped child to us (subreaper), and a zombie of the container's pid
                # namespace keeps its init from ever exiting on destroy.
                await self._kill_exec_group(pid_file, proc, group=self.runtime.name == "runc")
                try:
                    await asyncio.wait_for(asyncio.shield(comm), 5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await comm
                    await asyncio.sleep(0.05)
                    reaper.reap_orphans(self.manager._live_pids())
            (out, out_cut), (err, err_cut) = comm.result()
        finally:
            if watcher is not None:
                watcher.cancel()
            if not comm.done():
                comm.cancel()
            pids.close()
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
        oom_killed = oom.read() > oom_before
        oom.close()
        if watch_pids and not exhausted and pids.read() > pids_before:
            exhausted = True  # it hit the limit and ended before the next poll
        rc = proc.returncode if proc.returncode is not None else -1
        return ExecResult(
            137 if timed_out or seen_ms is not None else rc, out, err, timed_out, oom_killed=oom_killed,
            pids_exhausted=exhausted, stdout_truncated=out_cut, stderr_truncated=err_cut,
            pids_detected_ms=seen_ms,
        )

    @staticmethod
    async def _kill_exec_group(pid_file: Path, proc: asyncio.subprocess.Process, group: bool) -> None:
        """SIGKILL the process (``group``: its process group) that ``runc exec --pid-file`` started."""
        exec_pid: int | None = None
        for _ in range(100):  # runc writes the pid file right after starting the process
            with contextlib.suppress(OSError, ValueError):
                exec_pid = int(pid_file.read_text().strip())
            if exec_pid is not None or proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        if exec_pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # runc setsid()s the process: its group is the whole tree it started
            if group and os.getpgid(exec_pid) == exec_pid:
                os.killpg(exec_pid, _signal.SIGKILL)
        reaper.kill(exec_pid)

    # ---------------------------------------------------------------- network
    async def open_connection(
        self, port: int, host: str = "127.0.0.1", timeout_s: float = 5.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """TCP connection to ``host:port`` inside the sandbox's netns (no bridge, setns)."""
        if self.netns is None:
            raise ConflictError(f"sandbox {self.id} has no network namespace")
        return await open_connection_in_netns(self.netns, port, host, timeout_s=timeout_s)

    async def proxy(self, port: int, listen_port: int = 0) -> LoopbackProxy:
        """A started :class:`LoopbackProxy` from host 127.0.0.1 to ``port`` inside (closed on destroy)."""
        if self.netns is None:
            raise ConflictError(f"sandbox {self.id} has no network namespace")
        p = await LoopbackProxy(self.netns, port, listen_port=listen_port).start()
        self._proxies.append(p)
        return p

    # ---------------------------------------------------------------- destroy
    async def destroy(self) -> None:
        """Kill, ``runc delete``, remove cgroups, netns, mounts and the bundle. Idempotent, never half-done
        silently: raises RuntimeFailure listing what could not be removed."""
        async with self._destroy_lock:
            if self._destroyed:
                return
            for p in self._proxies:
                await p.close()
            self._proxies.clear()
            if self.pid is not None and self._exit is None:
                await self.kill()
            if self._waiter is not None:
                for _ in range(2):
                    try:
                        await asyncio.wait_for(asyncio.shield(self._waiter), 2.5)
                        break
                    except TimeoutError:
                        # init cannot finish while an inherited zombie of its pid namespace exists
                        reaper.reap_orphans(self.manager._live_pids())
                    except Exception:
                        break
                if not self._waiter.done():
                    self._waiter.cancel()
            self.close_stdin()
            for t in self._transports:
                t.close()
            self._transports.clear()
            if self._helper_pids:
                # gVisor's gofer/sandbox helpers are re-parented to us; runsc delete waits for them to vanish
                await self._reap_helpers()
            try:
                await self.manager._teardown(self.id, self.bundle, self.runtime, self.rootfs)
            except RuntimeFailure:
                # its processes are gone, what is left is bookkeeping on the host: hand it to
                # cleanup_orphans (the bundle dir stays as its record); destroy() may also be called again
                self.manager._forget(self)
                raise
            self._destroyed = True
            self.manager._forget(self)

    async def _reap_helpers(self) -> None:
        for pid in self._helper_pids:
            try:
                await asyncio.wait_for(reaper.wait_pid(pid), 3.0)
            except TimeoutError:
                reaper.kill(pid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reaper.wait_pid(pid), 2.0)
        self._helper_pids = []

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.destroy()


class SandboxManager:
    """Creates, tracks and reconciles sandboxes under ``settings.run_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sandboxes_dir = settings.sandboxes_dir
        self.runc_root = settings.runc_root
        self._sandboxes: dict[str, Sandbox] = {}
        with contextlib.suppress(OSError):
            reaper.enable_subreaper()

    def runtime(self, name: str = "runc") -> OciRuntime:
        root = self.runc_root if name == "runc" else self.settings.run_dir / "runsc"
        return make_runtime(
            name, runc_binary=self.settings.runc_binary, runsc_binary=self.settings.runsc_binary, root=root
        )

    def get(self, sandbox_id: str) -> Sandbox | None:
        return self._sandboxes.get(sandbox_id)

    def _live_pids(self) -> set[int]:
        return {sb.pid for sb in list(_LIVE.values()) if sb.pid is not None and sb._exit is None}

    def _forget(self, sb: Sandbox) -> None:
        self._sandboxes.pop(sb.id, None)
        _LIVE.pop((str(self.settings.run_dir), sb.id), None)

    # ----------------------------------------------------------------- create
    async def start_new(self, spec: SandboxSpec, *, stdin_pipe: bool = False) -> Sandbox:
        """:meth:`create` then start it; a start that fails destroys the sandbox before the error
        propagates (long-running sandboxes: instances, warm execute sandboxes)."""
        sb = await self.create(spec, stdin_pipe=stdin_pipe)
        try:
            await sb.start()
        except BaseException:
            await sb.destroy()
            raise
        return sb

    async def create(
        self,
        spec: SandboxSpec,
        *,
        stdin_pipe: bool = True,
        on_output: OutputCallback | None = None,
        output_limit: int = OUTPUT_LIMIT_BYTES,
    ) -> Sandbox:
        """Mount the rootfs, create the netns, write the bundle and ``runc create`` (process not started).

        If any step fails (or the task is cancelled) everything done so far is undone and the error
        propagates. ``stdin_pipe=False`` gives the process /dev/null as stdin.
        """
        return await self._make(spec, stdin_pipe, on_output, output_limit, None)

    async def restore(
        self,
        spec: SandboxSpec,
        image_path: Path,
        config: Mapping[str, Any] | Callable[[Sandbox], Mapping[str, Any]],
        *,
        work_path: Path | None = None,
        criu_opts: Mapping[str, bool] | None = None,
        on_output: OutputCallback | None = None,
        output_limit: int = OUTPUT_LIMIT_BYTES,
        timeout_s: float | None = None,
        share_memory: bool = False,
    ) -> Sandbox:
        """A *running* sandbox restored from a CRIU image (``runc restore --detach``).

        Same steps and cleanup-on-failure as :meth:`create`, except: the overlay has no copy fallback (a
        snapshot needs an upper), ``config`` (the dumped config.json with bundle/rootfs/netns/io paths
        rewritten for this sandbox, or a callable that builds it from the prepared :class:`Sandbox`:
        ``sb.rootfs.path``, ``sb.netns``, ``sb.io_dir``) is written instead of a generated one, the io dir is
        chowned to its ``process.user``, stdin is /dev/null, and ``runc restore`` replaces ``runc create``.
        ``criu_opts``: ``tcp_established``, ``file_locks``, ``ext_unix_sk``, ``shell_job`` (booleans).
        ``timeout_s`` bounds ``runc restore`` (default: the runtime driver's). ``share_memory``: opt the
        restored processes into KSM (:mod:`faasd.runtime.ksm`), so copies of one image share the pages
        none of them changed while ``ksmd`` runs.
        """
        job = _RestoreJob(Path(image_path), config, work_path, dict(criu_opts or {}), timeout_s, share_memory)
        return await self._make(spec, False, on_output, output_limit, job)

    async def _make(
        self,
        spec: SandboxSpec,
        stdin_pipe: bool,
        on_output: OutputCallback | None,
        output_limit: int,
        restore: _RestoreJob | None,
    ) -> Sandbox:
        spec.validate()
        if spec.runtime == "runsc" and spec.network.mode != "none":
            raise InvalidInputError(
                "runsc sandboxes have gVisor's own loopback-only network; "
                "use network mode 'none' or runtime 'runc'"
            )
        runtime = self.runtime(spec.runtime)
        runtime.require()
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        runtime.root.mkdir(parents=True, exist_ok=True)
        bundle = self.sandboxes_dir / spec.id
        if spec.id in self._sandboxes or (str(self.settings.run_dir), spec.id) in _LIVE:
            raise ConflictError(f"sandbox {spec.id} already exists; destroy it first or pick another id")
        if network.netns_path(spec.id).exists():
            raise ConflictError(
                f"network namespace {spec.id} already exists (sandbox ids must be unique on the host); "
                "pick another id or run cleanup_orphans() in the run_dir that owns it"
            )
        try:
            bundle.mkdir()
        except FileExistsError as exc:
            raise ConflictError(
                f"sandbox dir {bundle} already exists (left over from a crash?); run cleanup_orphans()"
            ) from exc
        sb = Sandbox(self, spec, bundle, runtime)
        self._sandboxes[spec.id] = sb
        _LIVE[(str(self.settings.run_dir), spec.id)] = sb
        fds: list[int] = []
        try:
            await self._create_steps(sb, fds, stdin_pipe, on_output, output_limit, restore)
        except BaseException as exc:
            verb = "restoring" if restore else "creating"
            full = self._storage_full_error(exc, f"{verb} sandbox {spec.id}")  # before cleanup frees space
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            try:
                await asyncio.shield(sb.destroy())
            except Exception as cleanup_exc:
                log.error("cleanup after failed create of %s failed: %s", spec.id, cleanup_exc)
            if full is not None:
                raise full from exc
            if isinstance(exc, OSError) and not isinstance(exc, FaasdError):
                raise RuntimeFailure(f"{verb} sandbox {spec.id} failed: {exc}") from exc
            raise
        return sb

    def _storage_full_error(self, exc: BaseException, what: str) -> StorageFullError | None:
        """A :class:`StorageFullError` naming the full directory if ``exc`` was caused by a full disk.

        ENOSPC/EDQUOT in our own writes is recognised by errno. runc does not always say so (``unable to
        store init state: %!w(<nil>)``, or no output at all when it cannot even write its log), so a
        runtime failure while run_dir has (almost) no space left is attributed to the full run_dir.
        """
        if isinstance(exc, StorageFullError):
            return None
        run_dir, data_dir = self.settings.run_dir, self.settings.data_dir
        where = run_dir
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            filename = str(exc.filename or "")
            if filename.startswith(str(data_dir) + "/") and not filename.startswith(str(run_dir) + "/"):
                where = data_dir
        elif isinstance(exc, RuntimeFailure):
            text = exc.message.lower()
            if "no space left" in text or "enospc" in text:
                where = min((run_dir, data_dir), key=_free_bytes)  # runc/CRIU do not say where
            elif _free_bytes(run_dir) >= _RUN_DIR_NEARLY_FULL:
                return None
        else:
            return None
        free_kib = _free_bytes(where) >> 10
        return StorageFullError(
            f"{what} failed: no space left on the filesystem of {where} ({free_kib} KiB free); "
            f"free space there (or point {'data_dir' if where == data_dir else 'run_dir'} at a larger "
            f"filesystem) and retry. Cause: {exc}",
            path=str(where),
        )

    async def _create_steps(
        self,
        sb: Sandbox,
        fds: list[int],
        stdin_pipe: bool,
        on_output: OutputCallback | None,
        output_limit: int,
        restore: _RestoreJob | None = None,
    ) -> None:
        spec, bundle, loop = sb.spec, sb.bundle, asyncio.get_running_loop()
        sb.io_dir.mkdir()
        _mount_io_dir(sb.io_dir)  # unmounted with everything under the bundle on teardown
        fallback = restore is None
        image_path = restore.image_path if restore is not None else None
        id_map: idmap.IdMap | None = None
        if self._wants_userns(spec):
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
                allow_copy_fallback=fallback, image_dir=self.settings.data_dir / "scratch",
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
            bind_sources = await loop.run_in_executor(None, _idmap_binds, sb, binds)
            root = sb.rootfs.path if sb.userns is None else await loop.run_in_executor(None, _stage_root, sb)
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
                config["annotations"][BINDS_ANNOTATION] = json.dumps(_bind_origins(sb, binds))
        else:
            config = restore.config(sb) if callable(restore.config) else restore.config
            config = await loop.run_in_executor(None, _restore_userns, sb, config)
            if sb.userns is not None:
                # next to the snapshots (data_dir), so the images are hard links, not copies
                image_path = await loop.run_in_executor(
                    None, userns.images_for, restore.image_path, self._restore_images(spec.id), sb.userns
                )
            user = config.get("process", {}).get("user", {})
            sb.user = ProcessUser(int(user.get("uid", 0)), int(user.get("gid", 0)))
        os.chown(sb.io_dir, sb.user.uid, sb.user.gid)
        sb.io_dir.chmod(0o770)
        sb.config_path.write_text(json.dumps(config, indent=1))
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
            col = _Collector(name, output_limit, on_output)
            transport, _ = await loop.connect_read_pipe(_factory(col), os.fdopen(fd, "rb", buffering=0))
            fds.remove(fd)  # owned by the transport now
            sb._collectors[name] = col
            sb._transports.append(transport)
        log_file = bundle / "runc.log"
        pid_file = bundle / "init.pid"
        try:
            if restore is None:
                sb.pid = await sb.runtime.create(
                    spec.id, bundle, stdin=in_r, stdout=out_w, stderr=err_w, pid_file=pid_file,
                    log_file=log_file,
                )
            else:
                work = restore.work_path or bundle / "criu-restore"
                work.mkdir(parents=True, exist_ok=True)
                opts = restore.criu_opts
                await sb.runtime.restore(
                    spec.id, bundle, image_path or restore.image_path, stdin=in_r, stdout=out_w, stderr=err_w,
                    log_file=log_file, work_path=work, detach=True, pid_file=pid_file,
                    tcp_established=opts.get("tcp_established", False),
                    file_locks=opts.get("file_locks", False), ext_unix_sk=opts.get("ext_unix_sk", False),
                    shell_job=opts.get("shell_job", False),
                    preexec_fn=ksm.opt_in_child if restore.share_memory and ksm.supported() else None,
                    **({} if restore.timeout_s is None else {"timeout_s": restore.timeout_s}),
                )
                sb.pid = int(pid_file.read_text().strip())
        except RuntimeFailure as exc:
            logged = read_log_errors(log_file)
            if logged and logged not in exc.message:
                exc.message = f"{exc.message} ({logged})"
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
                None, lambda: userns.pin_netns(spec.id, sb.pid or 0, lo_up=restore is None)
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

    def _restore_images(self, sandbox_id: str) -> Path:
        """Per-restore CRIU image dir of a sandbox with a user namespace (removed after the restore)."""
        return self.settings.data_dir / "scratch" / f"{sandbox_id}.criu-images"

    def _wants_userns(self, spec: SandboxSpec) -> bool:
        wanted = spec.userns if spec.userns is not None else self.settings.userns
        return wanted and spec.runtime == "runc"

    # -------------------------------------------------------------------- run
    async def run(
        self,
        spec: SandboxSpec,
        stdin: bytes = b"",
        timeout_s: float | None = None,
        *,
        output_limit: int = OUTPUT_LIMIT_BYTES,
    ) -> RunResult:
        """Create, start, feed ``stdin``, wait (killing at ``timeout_s``, default ``limits.timeout_s``, or
        as soon as a fork fails on the pids limit: ``pids_exhausted``) and destroy. ``duration_ms`` is the
        process's run time (start → exit)."""
        timeout = timeout_s if timeout_s is not None else spec.limits.timeout_s
        sb = await self.create(spec, output_limit=output_limit)
        try:
            await sb.start()
            t0 = time.monotonic()
            feeder = asyncio.ensure_future(self._feed(sb, stdin))
            status = await sb.wait(timeout, use_default_timeout=False, watch_pids=True)
            feeder.cancel()
            duration_ms = ((sb.exited_at or time.monotonic()) - t0) * 1000
            seen = sb.pids_seen_at
            return RunResult(
                exit_code=status.exit_code,
                stdout=sb.stdout(),
                stderr=sb.stderr(),
                duration_ms=duration_ms,
                oom_killed=status.oom_killed,
                timed_out=status.timed_out,
                signal=status.signal,
                memory_limit_mb=spec.limits.memory_mb,
                timeout_s=timeout,
                pids_limit=spec.limits.pids,
                pids_exhausted=status.pids_exhausted,
                stdout_truncated=sb.stdout_truncated,
                stderr_truncated=sb.stderr_truncated,
                pids_detected_ms=round(max(0.0, seen - t0) * 1000, 3) if seen is not None else None,
            )
        finally:
            await asyncio.shield(sb.destroy())

    @staticmethod
    async def _feed(sb: Sandbox, data: bytes) -> None:
        try:
            if data:
                await sb.write_stdin(data)
        finally:
            sb.close_stdin()

    # ------------------------------------------------------------ teardown
    async def _teardown(
        self, sandbox_id: str, bundle: Path, runtime: OciRuntime, rootfs: OverlayRootfs | None
    ) -> None:
        """Remove every trace of ``sandbox_id``; collects errors and raises one RuntimeFailure at the end."""
        problems: list[str] = []
        try:
            await runtime.delete(sandbox_id, force=True)
        except ContainerNotFound:
            pass
        except RuntimeFailure as exc:
            # force-delete can fail for a half-created container: kill its processes via the cgroup
            await asyncio.get_running_loop().run_in_executor(None, cgroups.remove, sandbox_id)
            try:
                await runtime.delete(sandbox_id, force=True)
            except ContainerNotFound:
                pass
            except RuntimeFailure:
                problems.append(str(exc))
                # runc's state dir would keep a dead container listed: remove it
                shutil.rmtree(runtime.root / sandbox_id, ignore_errors=True)
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, cgroups.remove, sandbox_id)
        if left:
            problems.append(f"cgroup dirs {', '.join(map(str, left))} could not be removed")
        try:
            await loop.run_in_executor(None, network.teardown_egress, sandbox_id)
            network.delete_netns(sandbox_id)
        except Exception as exc:
            problems.append(str(exc))
        shutil.rmtree(self._restore_images(sandbox_id), ignore_errors=True)  # left by a crash mid-restore
        staged = await loop.run_in_executor(None, userns.remove, sandbox_id)
        if staged:
            problems.append(f"could not unmount {', '.join(staged)}")
        try:
            if rootfs is not None:
                rootfs.unmount()
            else:
                OverlayRootfs.unmount_dir(bundle)
        except Exception as exc:
            problems.append(str(exc))
        if _mounts.mounts_under(bundle):
            problems.append(f"mounts left under {bundle}")
        elif not problems:
            shutil.rmtree(bundle, ignore_errors=True)
        # else the bundle dir stays: it is what lets cleanup_orphans find this sandbox and finish the job
        # (release its user namespace range included) once whatever failed works again
        if not problems:  # a range is reused only once nothing of the sandbox is left
            userns.release(sandbox_id)
        if problems:
            raise RuntimeFailure(f"cleanup of sandbox {sandbox_id} incomplete: {'; '.join(problems)}")

    # --------------------------------------------------------- reconciliation
    async def list(self) -> list[SandboxInfo]:
        """Sandboxes under this run_dir: runc containers and bundle dirs (owned or left over)."""
        infos: dict[str, SandboxInfo] = {}
        for runtime_name in ("runc", "runsc"):
            rt = self.runtime(runtime_name)
            if not rt.root.exists() or not rt.available():
                continue
            for c in await rt.list():
                cid = c.get("id", "")
                if not cid.startswith("fd-"):
                    continue
                infos[cid] = SandboxInfo(cid, c.get("status", "unknown"), c.get("pid") or None,
                                         Path(c.get("bundle") or self.sandboxes_dir / cid), self._owns(cid),
                                         runtime_name)
        if self.sandboxes_dir.exists():
            for d in self.sandboxes_dir.iterdir():
                if d.name.startswith("fd-") and d.name not in infos:
                    infos[d.name] = SandboxInfo(d.name, "unknown", None, d, self._owns(d.name))
        return sorted(infos.values(), key=lambda i: i.id)

    def _owns(self, sandbox_id: str) -> bool:
        return sandbox_id in self._sandboxes or (str(self.settings.run_dir), sandbox_id) in _LIVE

    async def cleanup_orphans(self) -> builtins.list[str]:
        """Destroy every ``fd-*`` sandbox under this run_dir that no live :class:`Sandbox` owns (containers,
        mounts, cgroups, netns, bundles), then remove the CRIU work dirs no live checkpoint/restore holds
        (:meth:`cleanup_criu_work_dirs`). Returns the sandbox ids cleaned. Used after a crash."""
        cleaned = []
        for info in await self.list():
            if info.owned:
                continue
            rt = self.runtime(info.runtime)
            try:
                await self._teardown(info.id, self.sandboxes_dir / info.id, rt, None)
            except RuntimeFailure as exc:
                log.error("orphan %s: %s", info.id, exc)
                continue
            cleaned.append(info.id)
        await self.cleanup_criu_work_dirs()
        return cleaned

    async def cleanup_criu_work_dirs(self) -> builtins.list[Path]:
        """Unmount and remove CRIU work dirs (``run_dir/criu-work/*``, ``<bundle>/criu-dump-*``) left by
        a checkpoint or restore that crashed. A live operation holds a lock on its work dir (see
        :mod:`faasd.runtime.checkpoint`), so those are kept. Returns the dirs removed."""
        # checkpoint builds on this module: imported here, not at the top, to avoid an import cycle
        from faasd.runtime.checkpoint import remove_stale_work_dirs

        removed = await asyncio.to_thread(remove_stale_work_dirs, self.settings.run_dir, self.sandboxes_dir)
        for work in removed:
            log.warning("removed the CRIU work dir %s left by a crashed checkpoint/restore", work)
        return removed
