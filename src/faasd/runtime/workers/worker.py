"""A running function instance (:class:`Worker`): one sandbox, readiness, invocations with the pids
watch and failure handling, control messages; :func:`start_worker` starts one (:func:`prepare_worker`
then :meth:`PreparedWorker.launch`: a sandbox can be created ahead of its start).

The per-mode request paths live in :mod:`.agent_mode` (python/node), :mod:`.exec_mode` and
:mod:`.http_mode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from faasd.errors import (
    ConflictError,
    FaasdError,
    InvalidInputError,
    ResourceLimitError,
    RuntimeFailure,
)
from faasd.runtime import cgroups, procstat
from faasd.runtime.adopt import release
from faasd.runtime.agent_client import AgentClient, InvokeEvent, InvokeRequest, InvokeResult
from faasd.runtime.agent_files import init_mount
from faasd.runtime.agent_ready import ReadySignal
from faasd.runtime.direct import Handover
from faasd.runtime.gateway_channel import GatewayChannel
from faasd.runtime.models import BindMount, ExitStatus
from faasd.runtime.sandbox import Sandbox, SandboxManager
from faasd.runtime.workers.agent_mode import (
    invoke_agent,
    new_agent_client,
    wait_agent_ready,
)
from faasd.runtime.workers.exec_mode import invoke_exec
from faasd.runtime.workers.http_mode import invoke_http, new_http_client, wait_http_ready
from faasd.runtime.workers.pids_watch import PidsWatch
from faasd.runtime.workers.spec import WorkerMode, WorkerSpec

if TYPE_CHECKING:  # http-mode only: imported when such a worker starts (faasd.runtime.netns_http)
    import httpx

SANDBOX_LOG_LIMIT = 256 * 1024
_MODE_NEEDS = {
    "python": "python functions need an image with python3, or set WorkerSpec.interpreter",
    "node": "node functions need an image with node (Node 18+), or set WorkerSpec.interpreter",
    "exec": "faasd-init could not be started",
    "http": "check the server command and the image's entrypoint",
}


async def start_worker(manager: SandboxManager, spec: WorkerSpec) -> Worker:
    """Create and start the sandbox, wait until the function can take requests; returns the worker.

    Raises :class:`InvalidInputError` when the function cannot start because of the function itself
    (handler does not import, server exits), :class:`RuntimeFailure` for platform problems; the sandbox
    is destroyed on every failure path.
    """
    prepared = await prepare_worker(manager, spec)
    return await prepared.launch()


async def prepare_worker(manager: SandboxManager, spec: WorkerSpec) -> PreparedWorker:
    """Create the worker's sandbox (namespaces, cgroups, mounts, ``runc create``) without starting it:
    :meth:`PreparedWorker.launch` starts it later (a spare for the next invocation of an ephemeral
    function), :meth:`PreparedWorker.discard` destroys it unused."""
    spec.validate()
    started = time.perf_counter()
    extra: list[BindMount] = []
    if spec.mode in ("exec", "node") or (spec.mode == "http" and spec.direct):
        extra.append(await asyncio.to_thread(init_mount, manager.settings))
    sandbox_id = spec.sandbox_id or spec.new_sandbox_id()
    sandbox_spec = spec.sandbox_spec(sandbox_id, extra)
    try:
        sb = await manager.create(sandbox_spec, stdin_pipe=False, output_limit=SANDBOX_LOG_LIMIT)
    except RuntimeFailure as exc:
        if "executable file not found" in exc.message or "no such file or directory" in exc.message:
            raise InvalidInputError(
                f"function {spec.function!r} cannot start: {sandbox_spec.resolved_args()[0]!r} is not in its "
                f"image ({_MODE_NEEDS[spec.mode]})",
                cause=exc.message,
            ) from exc
        raise
    return PreparedWorker(spec, sb, started)


class PreparedWorker:
    """A worker whose sandbox is created and not started (:func:`prepare_worker`); launch or discard it
    exactly once."""

    def __init__(self, spec: WorkerSpec, sandbox: Sandbox, started: float) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.started = started
        """``time.perf_counter()`` when preparing began: the worker's ``init_ms`` counts from here unless
        :meth:`launch` is told otherwise."""

    async def launch(self, *, count_prepare: bool = True) -> Worker:
        """Start the sandbox and wait until the function can take requests (errors: see
        :func:`start_worker`; the sandbox is destroyed on every failure path). ``count_prepare``: the
        worker's ``init_ms`` includes the sandbox's creation (False for a spare made ahead of time)."""
        spec, sb = self.spec, self.sandbox
        started = self.started if count_prepare else time.perf_counter()
        worker: Worker | None = None
        handover: Handover | None = None
        handing: asyncio.Task[socket.socket | None] | None = None
        ready: ReadySignal | None = None
        # The Python agent in process mode keeps the hand-over connection as its gateway channel.
        gateway = spec.mode == "python" and not spec.fork_per_request
        owner = (sb.user.uid, sb.user.gid) if sb.user is not None else None
        try:
            if spec.direct and spec.direct_listener is not None:
                handover = Handover(sb.io_dir, spec.direct_listener, owner)
                handing = asyncio.create_task(handover.send(keep=gateway))
            if spec.mode == "python":  # the Python agent writes to it once it listens (see agent_ready)
                ready = ReadySignal.create(sb.io_dir, owner)
            await sb.start()
            worker = Worker(spec, sb)
            await worker._wait_ready(spec.ready_timeout_s, ready)
            if handing is not None:
                # The agent (faasd-init for node) takes the socket before it loads the handler: done by now.
                kept = await asyncio.wait_for(asyncio.shield(handing), 5.0)
                worker.direct = True
                if kept is not None:
                    worker.gateway = GatewayChannel(kept, spec.function, worker.id)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(worker.close() if worker is not None else sb.destroy())
            raise
        finally:
            if ready is not None:
                ready.close()
            if handing is not None and not handing.done():
                handing.cancel()
            if handover is not None:
                handover.close()
        worker.init_ms = round((time.perf_counter() - started) * 1000, 3)
        return worker

    async def discard(self) -> None:
        """Destroy the sandbox unused."""
        await self.sandbox.destroy()


class Worker:
    """One running function instance. Not reusable after :meth:`close` or after it died (``alive``)."""

    def __init__(self, spec: WorkerSpec, sandbox: Sandbox) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.init_ms: float | None = None
        self.invocations = 0
        self.created_at = time.monotonic()
        self.last_used_at: float | None = None
        self.pong: dict[str, Any] | None = None
        self.direct = False
        """True while the sandbox serves the function's direct address (received its listening socket)."""
        self.gateway: GatewayChannel | None = None
        """The agent's gateway channel: the daemon's gateway hands client connections over it."""
        self._closed = False
        self._dead_reason: str | None = None
        self._lock = asyncio.Lock()
        self._oom = cgroups.OomCounter(sandbox.id)
        self._pids = cgroups.PidsCounter(sandbox.id)
        self._pids_watch = PidsWatch(self._pids, sandbox, spec.limits.pids)
        self._client: AgentClient | None = None
        self._http: httpx.AsyncClient | None = None
        if spec.mode in ("python", "node"):
            self._client = new_agent_client(sandbox, spec)
        elif spec.mode == "http":
            self._http = new_http_client(sandbox)

    @classmethod
    async def attach(
        cls, sandbox: Sandbox, spec: WorkerSpec, *, restored: bool = True, seed: str | None = None
    ) -> Worker:
        """A worker around an already running sandbox (e.g. one restored from a CRIU snapshot).

        Waits until the function answers; with ``restored`` the agent is told it was restored (it reseeds
        its PRNGs and runs the function's after-restore hooks). ``faasd.runtime.restore.restore`` already
        does that unless called with ``notify_agent=False``: then pass ``restored=False`` here.
        """
        started = time.perf_counter()
        worker = cls(spec, sandbox)
        await worker._wait_ready(spec.ready_timeout_s)
        if restored and worker._client is not None:
            await worker.notify_restored(seed=seed)
        worker.init_ms = round((time.perf_counter() - started) * 1000, 3)
        return worker

    # ------------------------------------------------------------------ state
    @property
    def id(self) -> str:
        return self.sandbox.id

    @property
    def mode(self) -> WorkerMode:
        return self.spec.mode

    @property
    def alive(self) -> bool:
        """True while the worker can take requests."""
        return not self._closed and self._dead_reason is None and self._exit_status() is None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def logs(self) -> tuple[bytes, bytes]:
        """The sandbox main process' own stdout/stderr (agent or server logs; bounded)."""
        out, err = getattr(self.sandbox, "stdout", None), getattr(self.sandbox, "stderr", None)
        if not callable(out) or not callable(err):  # e.g. a RestoredSandbox: raw fds, not buffers
            return b"", b""
        return out(), err()

    def _exit_status(self) -> ExitStatus | None:
        if hasattr(self.sandbox, "exit_status"):
            return self.sandbox.exit_status
        pid = getattr(self.sandbox, "pid", None)  # duck-typed sandboxes (RestoredSandbox): look at init
        return None if pid is None or _pid_running(pid) else ExitStatus(-1)

    def _check_usable(self) -> None:
        if self._closed:
            raise ConflictError(f"worker {self.id} is closed; start a new worker")
        if self._dead_reason is not None:
            raise RuntimeFailure(f"worker {self.id} is dead ({self._dead_reason}); start a new worker")
        status = self._exit_status()
        if status is not None:
            raise RuntimeFailure(f"worker {self.id} exited (code {status.exit_code}); start a new worker")

    # -------------------------------------------------------------- readiness
    async def _alive(self) -> bool:
        return self._exit_status() is None

    async def _describe_death(self) -> str:
        # give the exit watcher a moment to collect the status and the output
        with contextlib.suppress(Exception):
            if hasattr(self.sandbox, "wait"):
                await asyncio.wait_for(
                    self.sandbox.wait(use_default_timeout=False, kill_on_timeout=False), 1.0
                )
        status = self._exit_status()
        how = "its process is gone"
        if status is not None:
            how = f"exit code {status.exit_code}" + (" (out of memory)" if status.oom_killed else "")
        out, err = self.logs()
        tail = (err or out)[-2000:].decode("utf-8", "replace").strip()
        return f"({how}); its output:\n{tail}" if tail else f"({how}) without output"

    async def _wait_ready(self, timeout_s: float, signal: ReadySignal | None = None) -> None:
        if self._client is not None:
            self.pong = await wait_agent_ready(
                self._client,
                self.spec,
                timeout_s,
                alive=self._alive,
                describe_death=self._describe_death,
                signal=signal,
            )
        elif self._http is not None:
            await wait_http_ready(
                self.sandbox,
                self.spec,
                self._http,
                timeout_s,
                alive=self._alive,
                describe_death=self._describe_death,
            )
        # exec: faasd-init is ready once started; a broken command shows at the first request

    # ----------------------------------------------------------------- invoke
    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        """Run one request; raises :class:`ResourceLimitError` (timeout, memory) or :class:`RuntimeFailure`.

        A function that raised or crashed is *not* an exception here: the result has ``error`` set and
        status 500. After an exception check :attr:`alive`; a dead worker has already been destroyed.
        """
        async with self._serving(request):
            return await self._pids_watch.result(self._invoke_events(request))

    async def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        """Yield :class:`StreamChunk` while the function runs, then the :class:`InvokeResult`.

        python/node: ``stdout``/``stderr`` chunks as the function writes them; exec: its ``stderr`` once
        it ended; http: ``body`` chunks as the response arrives. Close the iterator (``aclosing``) if you
        stop early: the worker serves nothing else until then."""
        async with self._serving(request):
            async for event in self._pids_watch.stream(self._invoke_events(request)):
                yield event

    @contextlib.asynccontextmanager
    async def _serving(self, request: InvokeRequest) -> AsyncIterator[None]:
        """One request at a time on a usable worker; a failure is handled (a dead worker destroyed, an
        OOM kill named) before it propagates."""
        self._check_usable()
        if self.spec.mode == "http" and request.env:
            raise InvalidInputError(
                "per-request environment variables are not supported for http-mode functions"
            )
        async with self._lock:
            self._check_usable()
            self.last_used_at = time.monotonic()
            oom_before = self._oom_kills()
            try:
                yield
            except FaasdError as exc:
                await self._after_failure(exc, oom_before)
                raise
            finally:
                self.invocations += 1

    async def _invoke_events(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        if self._client is not None:
            events = invoke_agent(self._client, request, init_ms=self.init_ms)
        elif self._http is not None:
            events = invoke_http(self._http, self.spec, request, init_ms=self.init_ms, alive=self._alive)
        else:
            events = invoke_exec(
                self.sandbox, self.spec, request, init_ms=self.init_ms, oom_kills=self._oom_kills
            )
        async for event in events:
            yield event

    def _oom_kills(self) -> int:
        try:
            return self._oom.read()
        except Exception:
            return 0

    async def _after_failure(self, exc: FaasdError, oom_before: int) -> None:
        """Decide whether the worker survived a failed request; destroy it if not (and say why)."""
        usable = exc.details.get("worker_usable", True) and await self._alive()
        if usable:
            return
        self._dead_reason = exc.message
        why = await self._describe_death()
        oom = self._oom_kills() > oom_before or (
            (status := self._exit_status()) is not None and status.oom_killed
        )
        with contextlib.suppress(Exception):
            await self.close()
        if oom:
            mem = self.spec.limits.memory_mb
            raise ResourceLimitError(
                f"function {self.spec.function!r} exceeded its memory limit of {mem} MiB and was killed; "
                "raise the memory limit or use less memory",
                limit="memory",
                memory_mb=mem,
                worker_usable=False,
            ) from exc
        if isinstance(exc, RuntimeFailure):
            exc.message = f"{exc.message} {why}"
            exc.args = (exc.message,)

    # --------------------------------------------------------------- control
    async def notify_restored(self, *, seed: str | None = None) -> dict[str, Any]:
        """Tell the agent it runs in a copy restored from a snapshot (reseed PRNGs -- from ``seed`` when
        given, see :func:`faasd.snapshots.seeds.copy_seed` -- and run hooks).

        Returns the agent's ack (``hooks_run``, ``hook_errors``)."""
        self._check_usable()
        if self._client is None:
            return {"type": "ack", "of": "restored", "hooks_run": 0, "hook_errors": []}
        async with self._lock:
            return await self._client.notify_restored(seed=seed)

    async def unlisten(self) -> None:
        """Make the agent close its copy of the direct-address socket (before a checkpoint: the socket
        belongs to the host's network namespace). This worker keeps serving the gateway."""
        if not self.direct:
            return
        if self._client is None:
            raise ConflictError(
                f"worker {self.id} relays the function's direct address through faasd-init and cannot give "
                "the socket back; an http-mode function with a direct address cannot be snapshotted"
            )
        self._check_usable()
        async with self._lock:
            await self._client.unlisten()  # handed connections go back to the gateway first
        await self._close_gateway()
        self.direct = False

    async def ping(self) -> dict[str, Any]:
        self._check_usable()
        if self._client is None:
            return {"type": "pong", "runtime": self.spec.mode, "ready": True}
        return await self._client.ping()

    async def _close_gateway(self) -> None:
        """Take back the client connections the gateway handed to this worker, then close the channel."""
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.drain()
            self.gateway.close()
            self.gateway = None

    async def release(self) -> None:
        """Close the host side only, leaving the sandbox running for the next daemon to re-adopt
        (:func:`faasd.runtime.adopt.release`). The worker is closed afterwards."""
        if self._closed:
            return
        self._closed = True
        await self._close_gateway()
        self._oom.close()
        self._pids.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
        await release(self.sandbox)

    async def close(self) -> None:
        """Destroy the sandbox. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._close_gateway()
        self._oom.close()
        self._pids.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
        await self.sandbox.destroy()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "alive" if self.alive else ("closed" if self._closed else "dead")
        return f"<Worker {self.id} {self.spec.mode} {self.spec.function!r} {state}>"


def _pid_running(pid: int) -> bool:
    try:
        return not procstat.read(pid).ended
    except (OSError, IndexError, ValueError):
        return False
