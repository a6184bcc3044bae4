"""The sandbox manager: creates and restores sandboxes under ``settings.run_dir`` (undoing every step of a
failed one), runs one-shot sandboxes, tracks the live ones and reconciles what a crash left behind."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from faasd.background import Background
from faasd.config import Settings
from faasd.errors import ConflictError, FaasdError, InvalidInputError, RuntimeFailure
from faasd.rootfs import OverlayRootfs
from faasd.runtime import cgroup_moves, network, reaper
from faasd.runtime.criu_work import remove_stale_work_dirs
from faasd.runtime.models import RunResult, SandboxInfo, SandboxSpec
from faasd.runtime.runc import OciRuntime, make_runtime
from faasd.runtime.runc_state import RestoreSource
from faasd.runtime.sandbox.create import RestoreJob, create_steps, wants_userns
from faasd.runtime.sandbox.output import OUTPUT_LIMIT_BYTES, OutputCallback
from faasd.runtime.sandbox.registry import LIVE
from faasd.runtime.sandbox.sandbox import Sandbox
from faasd.runtime.sandbox.storage import storage_full_error
from faasd.runtime.sandbox.teardown import teardown
from faasd.runtime.sandbox.userns_setup import restore_images_dirs

log = logging.getLogger(__name__)


class SandboxManager:
    """Creates, tracks and reconciles sandboxes under ``settings.run_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sandboxes_dir = settings.sandboxes_dir
        self.runc_root = settings.runc_root
        self._sandboxes: dict[str, Sandbox] = {}
        self._teardowns = Background()
        with contextlib.suppress(OSError):
            reaper.enable_subreaper()
        if settings.cgroup_favordynmods and os.geteuid() == 0:
            cgroup_moves.favor_dynamic_moves()

    def runtime(self, name: str = "runc") -> OciRuntime:
        root = self.runc_root if name == "runc" else self.settings.run_dir / "runsc"
        return make_runtime(
            name, runc_binary=self.settings.runc_binary, runsc_binary=self.settings.runsc_binary, root=root
        )

    def get(self, sandbox_id: str) -> Sandbox | None:
        return self._sandboxes.get(sandbox_id)

    def _forget(self, sb: Sandbox) -> None:
        self._sandboxes.pop(sb.id, None)
        LIVE.pop((str(self.settings.run_dir), sb.id), None)

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
        source: RestoreSource | None = None,
    ) -> Sandbox:
        """A *running* sandbox restored from a CRIU image (``runc restore --detach``, or CRIU directly).

        Same steps and cleanup-on-failure as :meth:`create`, except: the overlay has no copy fallback (a
        snapshot needs an upper), ``config`` (the dumped config.json with bundle/rootfs/netns/io paths
        rewritten for this sandbox, or a callable that builds it from the prepared :class:`Sandbox`:
        ``sb.rootfs.path``, ``sb.netns``, ``sb.io_dir``) is written instead of a generated one, the io dir is
        chowned to its ``process.user``, stdin is /dev/null, and ``runc restore`` replaces ``runc create``.
        ``criu_opts``: ``tcp_established``, ``file_locks``, ``ext_unix_sk``, ``shell_job`` (booleans).
        ``timeout_s`` bounds ``runc restore`` (default: the runtime driver's). ``share_memory``: opt the
        restored processes into KSM (:mod:`faasd.runtime.ksm`), so copies of one image share the pages
        none of them changed while ``ksmd`` runs. ``source``: runc's record of the snapshot's source sandbox;
        with it (and ``Settings.criu_direct``) CRIU restores the sandbox without runc
        (:mod:`faasd.runtime.criu_restore`) when :func:`faasd.runtime.runc_state.plan` allows it.
        """
        job = RestoreJob(
            Path(image_path), config, work_path, dict(criu_opts or {}), timeout_s, share_memory, source
        )
        return await self._make(spec, False, on_output, output_limit, job)

    async def _make(
        self,
        spec: SandboxSpec,
        stdin_pipe: bool,
        on_output: OutputCallback | None,
        output_limit: int,
        restore: RestoreJob | None,
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
        if spec.id in self._sandboxes or (str(self.settings.run_dir), spec.id) in LIVE:
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
        LIVE[(str(self.settings.run_dir), spec.id)] = sb
        fds: list[int] = []
        try:
            await create_steps(sb, self.settings, fds, stdin_pipe, on_output, output_limit, restore)
        except BaseException as exc:
            verb = "restoring" if restore else "creating"
            full = storage_full_error(
                exc, f"{verb} sandbox {spec.id}", self.settings.run_dir, self.settings.data_dir
            )  # before cleanup frees space
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

    def _restore_images(self, sandbox_id: str) -> tuple[Path, ...]:
        """Where a restore of a sandbox with a user namespace may have left its image dir."""
        return restore_images_dirs(self.settings, sandbox_id)

    def _wants_userns(self, spec: SandboxSpec) -> bool:
        return wants_userns(self.settings, spec)

    # -------------------------------------------------------------------- run
    async def run(
        self,
        spec: SandboxSpec,
        stdin: bytes = b"",
        timeout_s: float | None = None,
        *,
        output_limit: int = OUTPUT_LIMIT_BYTES,
        background_teardown: bool = False,
    ) -> RunResult:
        """Create, start, feed ``stdin``, wait (killing at ``timeout_s``, default ``limits.timeout_s``, or
        as soon as a fork fails on the pids limit: ``pids_exhausted``) and destroy. ``duration_ms`` is the
        process's run time (start → exit).

        With ``background_teardown`` the result is returned as soon as the program has exited and its
        output is in, and the sandbox is destroyed by a task of this manager: :meth:`settle` waits for
        those (call it before the event loop ends, or they are cancelled half-way and leave their traces
        to :meth:`cleanup_orphans`). A run that fails tears down before its error propagates, either way.
        """
        timeout = timeout_s if timeout_s is not None else spec.limits.timeout_s
        sb = await self.create(spec, output_limit=output_limit)
        done = False
        try:
            await sb.start()
            t0 = time.monotonic()
            feeder = asyncio.ensure_future(self._feed(sb, stdin))
            status = await sb.wait(timeout, use_default_timeout=False, watch_pids=True)
            feeder.cancel()
            duration_ms = ((sb.exited_at or time.monotonic()) - t0) * 1000
            seen = sb.pids_seen_at
            result = RunResult(
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
            done = True
        finally:
            if not (done and background_teardown):
                await asyncio.shield(sb.destroy())
        if background_teardown:
            self._teardowns.spawn(self._destroy_logged(sb))
        return result

    @staticmethod
    async def _destroy_logged(sb: Sandbox) -> None:
        try:
            await sb.destroy()
        except RuntimeFailure as exc:  # its bundle stays: cleanup_orphans finishes the job
            log.error("background teardown of sandbox %s: %s", sb.id, exc.message)
        except Exception:
            log.exception("background teardown of sandbox %s failed", sb.id)

    async def settle(self) -> None:
        """Wait until every teardown :meth:`run` left in the background (``background_teardown``) is over."""
        await self._teardowns.drain()

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
        await teardown(sandbox_id, bundle, runtime, rootfs, restore_images=self._restore_images(sandbox_id))

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
        return sandbox_id in self._sandboxes or (str(self.settings.run_dir), sandbox_id) in LIVE

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
        :mod:`faasd.runtime.criu_work`), so those are kept. Returns the dirs removed."""
        removed = await asyncio.to_thread(remove_stale_work_dirs, self.settings.run_dir, self.sandboxes_dir)
        for work in removed:
            log.warning("removed the CRIU work dir %s left by a crashed checkpoint/restore", work)
        return removed
