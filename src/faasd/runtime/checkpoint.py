"""CRIU checkpoints of sandboxes (restoring one: :mod:`faasd.runtime.restore`).

``checkpoint`` captures a running sandbox *consistently*: its processes and its overlay upper at one
instant. When CRIU runs directly (:mod:`faasd.runtime.criu_dump`), CRIU stops the processes itself and
calls faasd back at its post-dump action, while they are still stopped, to copy the upper; CRIU
resumes them once the copy is done. Otherwise (through runc, or a paused sandbox) the container is
frozen first (its cgroup freezer, written directly: :mod:`faasd.runtime.criu_freeze`; what ``runc
pause`` does, minus a runc process), dumped with ``runc checkpoint --leave-running`` (CRIU keeps the
cgroup frozen because it found it frozen), its upper copied, then thawed. Files therefore match what
the dumped processes had open -- CRIU refuses to restore when an open file changed size after the
dump.

Layout of a capture directory (what ``faasd.snapshots`` stores)::

    criu/            CRIU image dir (pages-*.img, core-*.img, descriptors.json, ...)
    upper/           copy of the overlay upper at the instant of the dump
    bundle/config.json
    checkpoint.json  sandbox id, lowers, timings

CRIU work dirs (logs): ``<bundle>/criu-dump-<pid>-<n>/`` during a dump, locked while in use
(:mod:`faasd.runtime.criu_work`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.errors import ConflictError, InvalidInputError, RuntimeFailure, StorageFullError
from faasd.runtime import criu_cli, criu_dump, gvisor_checkpoint
from faasd.runtime.checkpointable import Checkpointable, CheckpointSource, checkpoint_source
from faasd.runtime.criu_conf import cgroup_yard
from faasd.runtime.criu_freeze import freeze, thaw
from faasd.runtime.criu_work import DUMP_WORK_PREFIX, log_tail, make_work_dir, read_log, remove_work_dir
from faasd.runtime.runc_state import RUNC_STATE_NAME

CRIU_OPTS: dict[str, bool] = {"tcp_established": True, "file_locks": True, "ext_unix_sk": True}
"""CRIU options used for both dump and restore (they must match)."""


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
            log = read_log(work / "dump.log")
            if _is_enospc_text(log) or _is_enospc_text(str(exc)) or _free_bytes(dest) < 1024 * 1024:
                raise StorageFullError(
                    f"no space left in {dest.parent} while checkpointing sandbox {src.id}; the sandbox "
                    "keeps running. Free space (delete snapshots, gc) or enlarge the data dir.",
                    sandbox=src.id,
                ) from exc
            raise RuntimeFailure(
                f"CRIU checkpoint of sandbox {src.id} failed: {exc.message}\n{log_tail(log)}", sandbox=src.id
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


