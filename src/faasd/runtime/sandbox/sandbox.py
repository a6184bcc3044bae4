"""A sandbox: one runc (or runsc) container, its stdio, its state, and its lifecycle (start, wait, kill,
pause, exec, network access, destroy). Made by :class:`~faasd.runtime.sandbox.SandboxManager`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal as _signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from faasd.config import Settings
from faasd.errors import ConflictError, RuntimeFailure
from faasd.rootfs import OverlayRootfs
from faasd.runtime import cgroups, network, reaper
from faasd.runtime.models import ExecResult, ExitStatus, SandboxSpec, UserNamespace
from faasd.runtime.proxy import LoopbackProxy, open_connection_in_netns
from faasd.runtime.runc import OciRuntime
from faasd.runtime.sandbox.exec import run_exec
from faasd.runtime.sandbox.limits import pids_limit_hit
from faasd.runtime.sandbox.output import OutputCollector, write_all
from faasd.runtime.sandbox.registry import live_pids
from faasd.runtime.spec import ProcessUser


class SandboxOwner(Protocol):
    """What a :class:`Sandbox` needs of the manager that made it
    (:class:`~faasd.runtime.sandbox.SandboxManager`)."""

    @property
    def settings(self) -> Settings: ...

    async def _teardown(
        self, sandbox_id: str, bundle: Path, runtime: OciRuntime, rootfs: OverlayRootfs | None
    ) -> None:
        """Remove every trace of the sandbox on the host (raises RuntimeFailure listing what is left)."""

    def _forget(self, sb: Sandbox) -> None:
        """Stop tracking ``sb`` (destroyed, or handed to ``cleanup_orphans``)."""


class Sandbox:
    """A created container. Obtain from :meth:`SandboxManager.create`; always :meth:`destroy` it."""

    def __init__(self, manager: SandboxOwner, spec: SandboxSpec, bundle: Path, runtime: OciRuntime) -> None:
        self.manager = manager
        self.spec = spec
        self.id = spec.id
        self.bundle = bundle
        self.runtime = runtime
        self.io_dir = bundle / "io"
        self.rootfs: OverlayRootfs | None = None
        self.netns: Path | None = None
        self.egress: network.EgressLink | None = None
        self.restored_by: str | None = None
        """How a restored sandbox was restored: ``criu`` (without runc, :mod:`faasd.runtime.criu_restore`) or
        ``runc``; None for a created one."""
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
        self._collectors: dict[str, OutputCollector] = {}
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
    def criu_direct(self) -> bool:
        """Whether checkpoints of this sandbox may run CRIU without runc (``Settings.criu_direct``)."""
        return self.manager.settings.criu_direct

    @property
    def criu_binary(self) -> str:
        return self.manager.settings.criu_binary

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
        await asyncio.get_running_loop().run_in_executor(None, write_all, self._stdin_fd, data)

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
        return await run_exec(
            self.runtime, self.id, self.bundle, args, stdin=stdin, timeout=timeout, env=env, cwd=cwd,
            user=user, output_limit=output_limit, watch_pids=watch_pids,
        )

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
                        reaper.reap_orphans(live_pids())
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
