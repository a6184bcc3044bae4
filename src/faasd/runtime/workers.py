"""Workers: one function instance = one sandbox + the way requests reach the function inside it.

Modes:

* ``python`` / ``node``: the container's process is the faasd agent (``faasd/agents``, bind-mounted
  read-only at ``/faasd/agent``); requests go over the agent protocol on ``<bundle>/io/agent.sock``.
  Python can run each request in-process (fastest) or in a child forked from the preloaded process
  (``fork_per_request``: no state leaks between requests). The Node agent runs under ``faasd-init``
  (Node does not reap orphaned processes; the Python agent does it itself as PID 1).
* ``exec``: classic watchdog. The container's process is ``faasd-init`` (a static PID 1 that works in
  any image, even one without libc or shell); every request runs ``command`` with ``runc exec`` (through
  ``faasd-init --exec``, which enforces the timeout inside the sandbox), request body on stdin,
  response body from stdout.
* ``http``: the image's own HTTP server is the container's process, listening on ``port`` inside the
  sandbox's network namespace; requests are forwarded as HTTP/1.1 through a connection opened from
  inside that namespace (no bridge, no published port); the response body streams as
  ``StreamChunk("body", ...)``.

::

    worker = await start_worker(manager, WorkerSpec(function="hello", lowers=[...], handler="handler:handle"))
    result = await worker.invoke(InvokeRequest(body=b"hi"))
    async for event in worker.invoke_stream(InvokeRequest(body=b"hi")):   # StreamChunk..., InvokeResult
        ...
    await worker.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from faasd.errors import (
    ConflictError,
    FaasdError,
    InvalidInputError,
    ResourceLimitError,
    RuntimeFailure,
    pids_exhausted,
)
from faasd.runtime import cgroups
from faasd.runtime.agent_client import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    AgentClient,
    FunctionError,
    InvokeEvent,
    InvokeRequest,
    InvokeResult,
    StreamChunk,
    Timings,
    error_result,
)
from faasd.runtime.agent_files import (
    AGENT_SOCKET_NAME,
    INIT_IN_CONTAINER,
    agent_mount,
    init_mount,
    node_agent_args,
    python_agent_args,
)
from faasd.runtime.direct import HANDOVER_SOCKET_IN_CONTAINER, Handover
from faasd.runtime.headers import FRAMING, HOP_BY_HOP, relayable
from faasd.runtime.models import BindMount, ExitStatus, ImageConfigLike, Limits, NetworkSpec, SandboxSpec
from faasd.runtime.proxy import open_connection_in_netns
from faasd.runtime.sandbox import Sandbox, SandboxManager, pids_limit_hit

if TYPE_CHECKING:  # http-mode only: imported when such a worker starts (faasd.runtime.netns_http)
    import httpx

__all__ = [
    "FunctionError",
    "InvokeEvent",
    "InvokeRequest",
    "InvokeResult",
    "StreamChunk",
    "Timings",
    "Worker",
    "WorkerMode",
    "WorkerSpec",
    "start_worker",
]

WorkerMode = Literal["python", "node", "exec", "http"]
MODES: tuple[str, ...] = ("python", "node", "exec", "http")
DEFAULT_HANDLERS = {"python": "handler:handle", "node": "handler.js"}
SANDBOX_LOG_LIMIT = 256 * 1024
EXEC_TIMEOUT_EXIT = 124
EXEC_TIMEOUT_MARKER = b"\nfaasd-init: timeout\n"
EXEC_BACKSTOP_GRACE_S = 5.0
_MODE_NEEDS = {
    "python": "python functions need an image with python3, or set WorkerSpec.interpreter",
    "node": "node functions need an image with node (Node 18+), or set WorkerSpec.interpreter",
    "exec": "faasd-init could not be started",
    "http": "check the server command and the image's entrypoint",
}


@dataclass
class WorkerSpec:
    """What to run for one function instance."""

    function: str
    """Function name or id: names the sandbox (``fd-<slug>-<random>``) and is ``context.function_name``."""
    lowers: list[Path]
    """Read-only layer dirs of the image (plus code layers), lowest first."""
    mode: WorkerMode = "python"
    image_config: ImageConfigLike | None = None
    handler: str | None = None
    """python: ``module:function`` (default ``handler:handle``);
    node: ``file.js[:export]`` (default ``handler.js``)."""
    code_dir: str = "/function"
    """Where the function's code is inside the sandbox (python/node)."""
    fork_per_request: bool = False
    """python: fork a fresh process from the preloaded agent for every request (the zygote)."""
    command: list[str] | None = None
    """exec: the command run per request (default: the image's entrypoint + cmd).
    http: the server command (default: the image's entrypoint + cmd)."""
    port: int = 8080
    """http: the port the server listens on inside the sandbox."""
    readiness_path: str | None = None
    """http: also require ``GET readiness_path`` to answer with a status < 500 (default: TCP connect only)."""
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    mounts: list[BindMount] = field(default_factory=list)
    user: str | None = None
    cwd: str | None = None
    runtime: Literal["runc", "runsc"] = "runc"
    interpreter: str | None = None
    """python/node: the interpreter in the image (default ``python3`` / ``node`` from PATH)."""
    sandbox_id: str | None = None
    ready_timeout_s: float = 30.0
    max_response_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    direct_listener: socket.socket | None = None
    """python/node/http: a listening socket (the function's direct address, bound by the host) passed
    into the sandbox over SCM_RIGHTS; the agent serves HTTP on it (http mode: ``faasd-init`` relays its
    connections to ``port`` inside the sandbox). Shared by all workers of a function."""

    @property
    def direct(self) -> bool:
        return self.direct_listener is not None and self.mode in ("python", "node", "http")

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"unknown worker mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not self.function:
            raise InvalidInputError("a worker needs a function name")
        if self.fork_per_request and self.mode != "python":
            raise InvalidInputError("fork_per_request is only available for python functions")
        if self.mode == "http" and not 1 <= self.port <= 65535:
            raise InvalidInputError(f"port must be between 1 and 65535, got {self.port}")
        if self.mode == "exec" and not self._exec_command():
            raise InvalidInputError(
                "an exec-mode function needs a command (or an image with an entrypoint/cmd)"
            )
        if self.ready_timeout_s <= 0:
            raise InvalidInputError("ready_timeout_s must be positive")

    def _exec_command(self) -> list[str]:
        if self.command:
            return list(self.command)
        ic = self.image_config
        return [*(ic.entrypoint or []), *(ic.cmd or [])] if ic is not None else []

    def new_sandbox_id(self) -> str:
        slug = re.sub(r"[^a-z0-9_-]+", "-", self.function.lower()).strip("-_")[:24] or "fn"
        return f"fd-{slug}-{uuid.uuid4().hex[:10]}"

    def sandbox_spec(self, sandbox_id: str, extra_mounts: Sequence[BindMount] = ()) -> SandboxSpec:
        """The :class:`SandboxSpec` this worker runs in (mounts for agent/init included)."""
        handler = self.handler or DEFAULT_HANDLERS.get(self.mode, "")
        args: list[str] | None
        mounts = [*self.mounts, *extra_mounts]
        network = self.network
        if self.mode == "python":
            args = python_agent_args(
                handler,
                code_dir=self.code_dir,
                function_name=self.function,
                fork=self.fork_per_request,
                python=self.interpreter or "python3",
            )
            if self.direct:
                args += ["--direct-socket", HANDOVER_SOCKET_IN_CONTAINER]
                if self.limits.timeout_s:
                    args += ["--direct-timeout-s", str(self.limits.timeout_s)]
            mounts.append(agent_mount())
        elif self.mode == "node":
            # Node does not reap orphaned processes: faasd-init is PID 1 and runs the agent as its child.
            args = [
                INIT_IN_CONTAINER,
                "--main",
                *(["--listen-fd-from", HANDOVER_SOCKET_IN_CONTAINER] if self.direct else []),
                "--",
                *node_agent_args(
                    handler,
                    code_dir=self.code_dir,
                    function_name=self.function,
                    node=self.interpreter or "node",
                ),
            ]
            if self.direct and self.limits.timeout_s:
                args += ["--direct-timeout-s", str(self.limits.timeout_s)]
            mounts.append(agent_mount())
        elif self.mode == "exec":
            args = [INIT_IN_CONTAINER]
        else:
            args = list(self.command) if self.command else None
            if self.direct:  # faasd-init takes the socket and relays it to the server's port
                args = [
                    INIT_IN_CONTAINER,
                    "--main",
                    "--listen-fd-from",
                    HANDOVER_SOCKET_IN_CONTAINER,
                    "--forward",
                    str(self.port),
                    "--",
                    *self._exec_command(),
                ]
            if network.mode == "none":
                network = NetworkSpec(mode="loopback-proxy", ports=(self.port,))
        return SandboxSpec(
            id=sandbox_id,
            lowers=list(self.lowers),
            args=args,
            image_config=self.image_config,
            env=dict(self.env),
            cwd=self.cwd,
            user=self.user,
            limits=self.limits,
            network=network,
            mounts=mounts,
            runtime=self.runtime,
            annotations={"faasd.function": self.function, "faasd.worker.mode": self.mode},
        )


async def start_worker(manager: SandboxManager, spec: WorkerSpec) -> Worker:
    """Create and start the sandbox, wait until the function can take requests; returns the worker.

    Raises :class:`InvalidInputError` when the function cannot start because of the function itself
    (handler does not import, server exits), :class:`RuntimeFailure` for platform problems; the sandbox
    is destroyed on every failure path.
    """
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
    worker: Worker | None = None
    handover: Handover | None = None
    handing: asyncio.Task[None] | None = None
    try:
        if spec.direct and spec.direct_listener is not None:
            user = getattr(sb, "user", None)
            owner = (user.uid, user.gid) if user is not None else None
            handover = Handover(_io_dir(sb), spec.direct_listener, owner)
            handing = asyncio.create_task(handover.send())
        await sb.start()
        worker = Worker(spec, sb)
        await worker._wait_ready(spec.ready_timeout_s)
        if handing is not None:
            # The agent (faasd-init for node) takes the socket before it loads the handler: done by now.
            await asyncio.wait_for(asyncio.shield(handing), 5.0)
            worker.direct = True
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(worker.close() if worker is not None else sb.destroy())
        raise
    finally:
        if handing is not None and not handing.done():
            handing.cancel()
        if handover is not None:
            handover.close()
    worker.init_ms = round((time.perf_counter() - started) * 1000, 3)
    return worker


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
        self._closed = False
        self._dead_reason: str | None = None
        self._lock = asyncio.Lock()
        self._oom = cgroups.OomCounter(sandbox.id)
        self._pids = cgroups.PidsCounter(sandbox.id)
        self._client: AgentClient | None = None
        self._http: httpx.AsyncClient | None = None
        if spec.mode in ("python", "node"):
            self._client = AgentClient(
                _io_dir(sandbox) / AGENT_SOCKET_NAME,
                max_body_bytes=spec.max_response_bytes,
                max_output_bytes=spec.max_output_bytes,
            )
        elif spec.mode == "http":
            import httpx

            from faasd.runtime.netns_http import NetnsTransport

            self._http = httpx.AsyncClient(transport=NetnsTransport(sandbox), timeout=None)

    @classmethod
    async def attach(
        cls, sandbox: Sandbox, spec: WorkerSpec, *, restored: bool = True, seed: str | None = None
    ) -> Worker:
        """A worker around an already running sandbox (e.g. one restored from a CRIU snapshot).

        Waits until the function answers; with ``restored`` the agent is told it was restored (it reseeds
        its PRNGs and runs the function's after-restore hooks). ``faasd.runtime.checkpoint.restore`` already
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

    async def _wait_ready(self, timeout_s: float) -> None:
        if self._client is not None:
            pong = await self._client.wait_ready(
                timeout_s, alive=self._alive, describe_death=self._describe_death
            )
            if not pong.get("ready", False):
                raise InvalidInputError(
                    f"the handler {pong.get('handler')!r} of function {self.spec.function!r} "
                    "failed to load:\n"
                    f"{pong.get('error', '').strip()}",
                    traceback=pong.get("error", ""),
                )
            self.pong = pong
        elif self.spec.mode == "http":
            await self._wait_http_ready(timeout_s)
        # exec: faasd-init is ready once started; a broken command shows at the first request

    async def _wait_http_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        delay = 0.002
        last = "nothing is listening yet"
        while True:
            if not await self._alive():
                raise InvalidInputError(
                    f"the HTTP server of function {self.spec.function!r} exited while starting "
                    f"{await self._describe_death()}"
                )
            try:
                if self.spec.readiness_path is None:
                    _, writer = await open_sandbox_connection(self.sandbox, self.spec.port, "127.0.0.1", 1.0)
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
                    return
                assert self._http is not None
                resp = await self._http.get(self._url(self.spec.readiness_path, ""), timeout=2.0)
                if resp.status_code < 500:
                    return
                last = f"GET {self.spec.readiness_path} answered {resp.status_code}"
            except (OSError, TimeoutError, httpx.HTTPError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"the HTTP server of function {self.spec.function!r} did not answer "
                    f"on port {self.spec.port} "
                    f"within {timeout_s:.1f} s ({last}); check that it listens on 0.0.0.0:{self.spec.port}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # ----------------------------------------------------------------- invoke
    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        """Run one request; raises :class:`ResourceLimitError` (timeout, memory) or :class:`RuntimeFailure`.

        A function that raised or crashed is *not* an exception here: the result has ``error`` set and
        status 500. After an exception check :attr:`alive`; a dead worker has already been destroyed.
        """
        result: InvokeResult | None = None
        async for event in self.invoke_stream(request):
            if isinstance(event, InvokeResult):
                result = event
        assert result is not None
        return result

    async def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        """Yield :class:`StreamChunk` while the function runs, then the :class:`InvokeResult`.

        python/node: ``stdout``/``stderr`` chunks as the function writes them; exec: its ``stderr`` once
        it ended; http: ``body`` chunks as the response arrives. Close the iterator (``aclosing``) if you
        stop early: the worker serves nothing else until then."""
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
                async for event in self._watching_pids(self._invoke_events(request)):
                    yield event
            except FaasdError as exc:
                await self._after_failure(exc, oom_before)
                raise
            finally:
                self.invocations += 1

    async def _invoke_events(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        if self._client is not None:
            async for event in self._client.invoke_stream(request):
                if isinstance(event, InvokeResult):
                    event.timings.init_ms = self.init_ms
                yield event
        elif self.spec.mode == "exec":
            async for event in self._invoke_exec(request):
                yield event
        else:
            async for event in self._invoke_http(request):
                yield event

    async def _watching_pids(self, events: AsyncIterator[InvokeEvent]) -> AsyncIterator[InvokeEvent]:
        """Pass ``events`` on, but end the request with ``pids_exhausted`` (and recycle the worker: the
        processes it forked cannot be told apart from the agent's) as soon as a fork fails on the sandbox's
        pids limit, or if one failed by the time the result arrives.

        The request runs in a task of its own that feeds a queue, so that it keeps one task context
        (``asyncio.timeout`` inside) while this generator races it against the pids counter."""
        baseline = self._pids.read()
        started = time.monotonic()
        queue: asyncio.Queue[tuple[InvokeEvent | None, BaseException | None]] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for ev in events:
                    queue.put_nowait((ev, None))
                queue.put_nowait((None, None))
            except Exception as exc:
                queue.put_nowait((None, exc))

        async def exhausted(seen_at: float) -> ResourceLimitError:
            # the fork bomb goes with its sandbox at once (SIGKILL of init ends the pid namespace); the
            # worker is closed by the failure handling, which then need not wait for it to die
            await self.sandbox.kill()
            return pids_exhausted(
                self.spec.limits.pids, "the invocation", worker_usable=False,
                detected_ms=round((seen_at - started) * 1000, 3),
            )

        producer = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(pids_limit_hit(self._pids, baseline))
        getter: asyncio.Future[tuple[InvokeEvent | None, BaseException | None]] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    raise await exhausted(watcher.result())
                event, error = getter.result()
                if error is not None:
                    if self._pids.read() > baseline:
                        raise await exhausted(time.monotonic()) from error
                    raise error
                if event is None:
                    return
                if isinstance(event, InvokeResult) and self._pids.read() > baseline:
                    raise await exhausted(time.monotonic())  # hit and over before the next poll
                yield event
        finally:
            watcher.cancel()
            if getter is not None:
                getter.cancel()
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(BaseException):
                    await producer

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

    async def _invoke_exec(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        command = self.spec._exec_command()
        env = {**_cgi_env(request), **request.env}
        oom_before = self._oom_kills()
        # faasd-init enforces the timeout inside the sandbox (and kills the request's process group), so
        # `runc exec` always ends by itself; the host timeout is only a backstop.
        timeout_ms = int(request.timeout_s * 1000) if request.timeout_s else 0
        argv = [INIT_IN_CONTAINER, "--exec", str(timeout_ms), "--", *command]
        backstop = request.timeout_s + EXEC_BACKSTOP_GRACE_S if request.timeout_s else None
        started = time.perf_counter()
        res = await self.sandbox.exec(argv, stdin=request.body, timeout=backstop, env=env, cwd=self.spec.cwd)
        run_ms = round((time.perf_counter() - started) * 1000, 3)
        if res.timed_out:
            raise ResourceLimitError(
                f"the function did not finish within its timeout of {request.timeout_s} s and could not be "
                "stopped inside its sandbox; the worker is being recycled",
                limit="timeout",
                timeout_s=request.timeout_s,
                worker_usable=False,
            )
        if res.exit_code == EXEC_TIMEOUT_EXIT and res.stderr.endswith(EXEC_TIMEOUT_MARKER):
            raise ResourceLimitError(
                f"the function did not finish within its timeout of {request.timeout_s} s; "
                "its process was killed",
                limit="timeout",
                timeout_s=request.timeout_s,
                worker_usable=True,
                stderr=res.stderr[: -len(EXEC_TIMEOUT_MARKER)].decode("utf-8", "replace")[-4096:],
            )
        if res.exit_code == 137 and self._oom_kills() > oom_before:
            raise ResourceLimitError(
                f"function {self.spec.function!r} exceeded its memory limit of "
                f"{self.spec.limits.memory_mb} MiB "
                "and was killed",
                limit="memory",
                memory_mb=self.spec.limits.memory_mb,
                worker_usable=True,
            )
        if len(res.stdout) > self.spec.max_response_bytes:
            raise ResourceLimitError(
                f"the function's response of {len(res.stdout)} bytes exceeds the limit of "
                f"{self.spec.max_response_bytes} bytes",
                limit="response_bytes",
                worker_usable=True,
            )
        stderr = res.stderr[: self.spec.max_output_bytes]
        if stderr:
            yield StreamChunk("stderr", stderr)
        timings = Timings(init_ms=self.init_ms, run_ms=run_ms, total_ms=run_ms)
        common: dict[str, Any] = {
            "stderr": stderr,
            "exit_code": res.exit_code,
            "timings": timings,
            "output_truncated": len(res.stderr) > len(stderr),
        }
        if res.exit_code == 0:
            yield InvokeResult(
                status=200, headers=[("content-type", "application/octet-stream")], body=res.stdout, **common
            )
            return
        if _looks_like_missing_command(res.exit_code, res.stderr):
            raise InvalidInputError(
                f"the command {command!r} of function {self.spec.function!r} cannot be run in its image: "
                f"{res.stderr.decode('utf-8', 'replace').strip()[-500:]}"
            )
        err = FunctionError(
            kind="exit_code",
            message=f"the function's command exited with code {res.exit_code}",
            traceback=stderr.decode("utf-8", "replace")[-4000:],
        )
        result = error_result(err, **common)
        if res.stdout:
            result.body = res.stdout
            result.headers = [("content-type", "application/octet-stream")]
        yield result

    async def _invoke_http(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        """Forward the request; yield the response body as ``StreamChunk("body", ...)`` while it arrives
        (server-sent events, long responses), then the result (with the whole body)."""
        import httpx

        assert self._http is not None
        headers = relayable(request.headers.items(), HOP_BY_HOP | FRAMING)
        started = time.perf_counter()
        body = bytearray()
        try:
            async with (
                asyncio.timeout(request.timeout_s),
                self._http.stream(
                    request.method,
                    self._url(request.path, request.query),
                    headers=headers,
                    content=request.body,
                    timeout=request.timeout_s,
                ) as resp,
            ):
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > self.spec.max_response_bytes:
                        raise ResourceLimitError(
                            "the function's response exceeds the limit of "
                            f"{self.spec.max_response_bytes} bytes",
                            limit="response_bytes",
                            worker_usable=True,
                        )
                    yield StreamChunk("body", chunk)
        except (httpx.TimeoutException, TimeoutError):
            raise ResourceLimitError(
                f"the function did not answer within its timeout of {request.timeout_s} s",
                limit="timeout",
                timeout_s=request.timeout_s,
                worker_usable=True,
            ) from None
        except (httpx.HTTPError, OSError) as exc:
            raise RuntimeFailure(
                f"the HTTP request to function {self.spec.function!r} failed: {type(exc).__name__}: {exc}",
                worker_usable=await self._alive(),
            ) from None
        ms = round((time.perf_counter() - started) * 1000, 3)
        yield InvokeResult(
            status=resp.status_code,
            headers=relayable(resp.headers.multi_items()),
            body=bytes(body),
            timings=Timings(init_ms=self.init_ms, run_ms=ms, total_ms=ms),
        )

    def _url(self, path: str, query: str) -> httpx.URL:
        import httpx

        return httpx.URL(
            scheme="http",
            host="127.0.0.1",
            port=self.spec.port,
            path=path or "/",
            query=query.encode() if query else None,
        )

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
            await self._client.unlisten()
        self.direct = False

    async def ping(self) -> dict[str, Any]:
        self._check_usable()
        if self._client is None:
            return {"type": "pong", "runtime": self.spec.mode, "ready": True}
        return await self._client.ping()

    async def close(self) -> None:
        """Destroy the sandbox. Idempotent."""
        if self._closed:
            return
        self._closed = True
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


# ------------------------------------------------------------------------------------- helpers
def _io_dir(sandbox: Sandbox) -> Path:
    io_dir = getattr(sandbox, "io_dir", None)
    return Path(io_dir) if io_dir is not None else Path(sandbox.bundle) / "io"


def _pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


async def open_sandbox_connection(
    sandbox: Sandbox, port: int, host: str, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if hasattr(sandbox, "open_connection"):
        return await sandbox.open_connection(port, host, timeout_s=timeout_s)
    netns = getattr(sandbox, "netns", None)
    if netns is None:
        raise ConflictError(f"sandbox {sandbox.id} has no network namespace")
    return await open_connection_in_netns(netns, port, host, timeout_s=timeout_s)


def _cgi_env(request: InvokeRequest) -> dict[str, str]:
    """The classic watchdog's request variables: Http_Method, Http_Path, Http_Query, Http_<Header>."""
    env = {"Http_Method": request.method, "Http_Path": request.path or "/", "Http_Query": request.query}
    for k, v in request.headers.items():
        name = "Http_" + re.sub(r"[^A-Za-z0-9]", "_", k.title())
        env[name] = v
    return env


def _looks_like_missing_command(exit_code: int, stderr: bytes) -> bool:
    text = stderr.decode("utf-8", "replace")
    return exit_code in (126, 127, 255) and (
        "faasd-init: cannot run" in text
        or "exec failed" in text
        or "executable file not found" in text
        or ("no such file or directory" in text and "runc" in text)
    )
