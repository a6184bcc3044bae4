"""Async driver for OCI runtimes with runc's CLI: ``runc`` and gVisor's ``runsc``.

Every method builds an argument list (the pure ``*_args`` methods of
:class:`~faasd.runtime.runc_args.OciCommandLine`, unit-tested) and runs the binary with
``--root``. A non-zero exit becomes :class:`faasd.errors.RuntimeFailure` carrying runc's stderr (or the
``error`` lines of its JSON log). ``create`` hands the container's stdio to caller-owned pipe fds, so
the container keeps them after ``runc create`` exits (runc's "pass-through" mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.errors import NotFoundError, RuntimeFailure
from faasd.runtime import execfifo, spawn
from faasd.runtime.runc_args import OciCommandLine
from faasd.runtime.runc_delete import remove_stopped

DEFAULT_CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CallResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class OciRuntime(OciCommandLine):
    """runc-compatible CLI driver. Use :class:`Runc` or :class:`Runsc`. The argv of each subcommand comes
    from the pure builders of :class:`~faasd.runtime.runc_args.OciCommandLine` (``create_args``, ...)."""

    name = "oci"

    # ------------------------------------------------------------ availability
    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def require(self) -> None:
        if not self.available():
            raise RuntimeFailure(f"{self.name} binary {self.binary!r} not found in PATH; install it")

    # --------------------------------------------------------------- execution
    async def call(
        self,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        check: bool = True,
        log_file: Path | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CallResult:
        """Run ``<binary> --root ROOT <args>``; RuntimeFailure (with stderr) when ``check`` and rc != 0.
        ``env``: added to the daemon's environment for this call.

        ``stdin``/``stdout``/``stderr`` may be caller-owned fds (then that stream is not captured).
        """
        self.require()
        argv = [*self.global_args(log_file), *args]
        try:
            done = await spawn.run(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                input=input,
                env={**os.environ, **env} if env else None,
                timeout_s=timeout_s,
            )
        except TimeoutError as exc:
            raise RuntimeFailure(f"{self.name} {args[0]} timed out after {timeout_s:g} s") from exc
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self.name} {args[0]}: {exc}") from exc
        result = CallResult(done.returncode, done.stdout, done.stderr)
        if check and result.returncode != 0:
            raise self._failure(args, result, log_file)
        return result

    def _failure(self, args: Sequence[str], result: CallResult, log_file: Path | None) -> RuntimeFailure:
        msg = result.stderr.decode(errors="replace").strip()
        if log_file is not None:
            logged = read_log_errors(log_file)
            if logged:
                msg = logged
        verb = args[0] if args else "?"
        text = f"{self.name} {verb} failed (exit {result.returncode}): {msg or 'no error output'}"
        if "does not exist" in msg or "container not found" in msg.lower():
            return _NotFoundFailure(text, stderr=msg, returncode=result.returncode)
        return RuntimeFailure(text, stderr=msg, returncode=result.returncode)

    # -------------------------------------------------------------- operations
    async def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        stdin: int,
        stdout: int,
        stderr: int,
        pid_file: Path,
        log_file: Path | None = None,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> int:
        """``runc create`` with the container's stdio on the given fds; returns the init pid."""
        await self.call(
            self.create_args(container_id, bundle, pid_file=pid_file),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            log_file=log_file,
            timeout_s=timeout_s,
        )
        return int(pid_file.read_text().strip())

    async def start(self, container_id: str) -> None:
        await self.call(self.start_args(container_id))

    async def run(
        self,
        container_id: str,
        bundle: Path,
        *,
        input: bytes | None = None,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> CallResult:
        """Foreground ``runc run``: returns the container's exit code and output (no check)."""
        return await self.call(
            self.run_args(container_id, bundle),
            input=input if input is not None else b"",
            timeout_s=timeout_s,
            check=False,
        )

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        pid_file: Path | None = None,
    ) -> CallResult:
        """Foreground ``runc exec``; the result carries the process's exit code (no check)."""
        return await self.call(
            self.exec_args(container_id, argv, env=env, cwd=cwd, user=user, pid_file=pid_file),
            input=input if input is not None else b"",
            timeout_s=timeout_s,
            check=False,
        )

    async def kill(
        self, container_id: str, signal: str | int = "KILL", *, all_processes: bool = False
    ) -> None:
        await self.call(self.kill_args(container_id, signal, all_processes=all_processes))

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        await self.call(self.delete_args(container_id, force=force))

    async def state(self, container_id: str) -> dict[str, Any]:
        res = await self.call(self.state_args(container_id))
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    async def list(self) -> list[dict[str, Any]]:
        if not self.root.exists():
            return []
        res = await self.call(self.list_args())
        items = json.loads(res.stdout or b"null")
        return list(items or [])

    async def pause(self, container_id: str) -> None:
        await self.call(self.pause_args(container_id))

    async def resume(self, container_id: str) -> None:
        await self.call(self.resume_args(container_id))

    async def stats(self, container_id: str) -> dict[str, Any]:
        """One ``runc events --stats`` sample (cgroup counters)."""
        res = await self.call(self.events_args(container_id, stats=True))
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    async def events(self, container_id: str, *, interval_s: float = 5.0) -> AsyncIterator[dict[str, Any]]:
        """Stream ``runc events`` (``{"type": "oom"}``, stats every ``interval_s``); cancel to stop."""
        self.require()
        proc = await asyncio.create_subprocess_exec(
            *self.global_args(),
            *self.events_args(container_id, interval_s=interval_s),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            async for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    yield json.loads(line)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def checkpoint(
        self,
        container_id: str,
        image_path: Path,
        *,
        log_file: Path | None = None,
        timeout_s: float = 120.0,
        **opts: Any,
    ) -> None:
        await self.call(
            self.checkpoint_args(container_id, image_path, **opts), log_file=log_file, timeout_s=timeout_s
        )

    async def restore(
        self,
        container_id: str,
        bundle: Path,
        image_path: Path,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        log_file: Path | None = None,
        timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
        **opts: Any,
    ) -> CallResult:
        """``runc restore``; ``env`` is added to runc's environment, which runc passes on to CRIU (e.g.
        :data:`faasd.runtime.ksm.CRIU_ENV`: inherited by the restored processes)."""
        return await self.call(
            self.restore_args(container_id, bundle, image_path, **opts),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            log_file=log_file,
            timeout_s=timeout_s,
            env=env,
        )


class _NotFoundFailure(RuntimeFailure):
    """runc says the container does not exist (callers treat it as 'already gone')."""

    code = NotFoundError.code


ContainerNotFound = _NotFoundFailure


class Runc(OciRuntime):
    name = "runc"

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete a container; a stopped one is removed as ``runc delete`` would, without its process
        (:func:`faasd.runtime.runc_delete.remove_stopped`), whenever that is sure to be the same."""
        if await asyncio.to_thread(remove_stopped, self.root / container_id):
            return
        await super().delete(container_id, force=force)

    async def start(self, container_id: str) -> None:
        """Start a created container by reading its exec FIFO (:mod:`faasd.runtime.execfifo`: what
        ``runc start`` does, without its process); ``runc start`` itself when there is no FIFO."""
        started = await asyncio.to_thread(
            execfifo.start_via_fifo, self.root / container_id, DEFAULT_CALL_TIMEOUT_S
        )
        if not started:
            await super().start(container_id)


class Runsc(OciRuntime):
    """gVisor. Same CLI as runc; needs ``--network=sandbox`` semantics from the netns in config.json."""

    name = "runsc"

    def require(self) -> None:
        if not self.available():
            raise RuntimeFailure(
                f"runsc is not installed ({self.binary!r} not in PATH): install gVisor "
                "(Debian: apt-get install runsc) or use runtime='runc'"
            )

    def global_args(self, log_file: Path | None = None) -> list[str]:
        # --network=none: the sentry's own netstack with loopback only (gVisor cannot adopt a netns
        # that has no external interface); --oci-seccomp: apply the spec's seccomp inside the sentry
        args = [self.binary, "--root", str(self.root), "--network=none", "--oci-seccomp", "--host-uds=create"]
        if log_file is not None:
            args += ["--log", str(log_file), "--log-format", "json"]
        return args


def read_log_errors(log_file: Path) -> str:
    """The ``error``/``fatal`` messages of a runc JSON log file, joined."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    msgs = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            msgs.append(str(entry.get("msg", "")).strip())
    return "; ".join(m for m in msgs if m)


def make_runtime(name: str, *, runc_binary: str, runsc_binary: str, root: Path) -> OciRuntime:
    if name == "runc":
        return Runc(runc_binary, root)
    if name == "runsc":
        return Runsc(runsc_binary, root)
    raise RuntimeFailure(f"unknown OCI runtime {name!r}; use 'runc' or 'runsc'")


def pipe_pair() -> tuple[int, int]:
    """A close-on-exec pipe (read, write)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    return r, w
