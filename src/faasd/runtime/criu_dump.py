"""Checkpoint a runc sandbox by running CRIU directly (what ``runc checkpoint --leave-running`` does for it).

``runc checkpoint`` starts runc, spawns CRIU once only to ask its version and then runs it as an RPC
service answering its notifications; for a small program that is ~15-25 ms of a ~50 ms dump, all of it
while the sandbox is frozen. This module runs one ``criu dump`` with the options ``runc checkpoint`` passes
(``libcontainer.Checkpoint`` of runc 1.1 is the reference), read from runc's record of the container
(``state.json``): the init's pid, the rootfs, the freezer cgroup, the bind mounts, devices and masked
files as external mounts, the empty network namespace, and writes runc's ``descriptors.json`` (the init's
fds 0-2) into the image so that either restore path can re-attach the stdio pipes.

With ``while_frozen``, CRIU stops the tasks itself (``--freeze-cgroup`` on a running cgroup) and calls
faasd back at its ``post-dump`` action (two FIFOs in the work dir) while they are still stopped: faasd
copies the sandbox's files there, and CRIU resumes the tasks when faasd answers. faasd's CRIU patch 0007
(:data:`NATIVE_POST_DUMP_MARKER`) does that handshake in CRIU itself; with another CRIU, the action script
``criu-post-dump.sh`` does it (CRIU then runs a shell at each action: ~5 ms more while the tasks stand
still). So
CRIU's own start-up (exec, libraries, kdat, options: ~20-30 ms) and exit no longer happen inside the
window the sandbox stands still, as they did when faasd froze the cgroup before starting CRIU. How long
the tasks stood still is CRIU's own measure (:func:`faasd.runtime.criu_cli.read_dump_stats`).

Only for sandboxes :func:`eligible` accepts (runc, network and pid namespaces of their own, a record to
read, a v1/hybrid cgroup host); the sandbox keeps running (a dump that stops the sandbox goes through
runc, which also removes the container).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from faasd.errors import RuntimeFailure
from faasd.runtime import criu_cli, spawn
from faasd.runtime.criu_cli import DESCRIPTORS_JSON
from faasd.runtime.runc_state import labels

DUMP_LOG = "dump.log"
POST_DUMP_SCRIPT = Path(__file__).with_name("criu-post-dump.sh")
POST_DUMP_ENV = "FAASD_POST_DUMP"
POST_DUMP_TIMEOUT_ENV = "FAASD_POST_DUMP_TIMEOUT"
NATIVE_POST_DUMP_MARKER = "faasd-post-dump-fifo-v2"
"""The marker of scripts/criu-patches/0007: CRIU does the handshake in ``$FAASD_POST_DUMP_FIFOS`` itself
(a variable of its own, so that CRIU never does it twice should an action script be given too)."""
NATIVE_POST_DUMP_ENV = "FAASD_POST_DUMP_FIFOS"


def can_call_back() -> bool:
    """Whether CRIU can run faasd's post-dump action script (shipped executable with the package)."""
    return os.access(POST_DUMP_SCRIPT, os.X_OK)


class _PostDump:
    """faasd's end of the post-dump handshake: FIFO ``ready`` (CRIU, or its action script, writes a line
    when the images are written and the tasks still stopped) and ``go`` (faasd writes the status: 0 lets
    the dump finish, anything else fails it).
    Both are opened before CRIU starts: ``ready`` for reading without blocking, ``go`` read-write (so
    neither side's open ever waits for the other; closing ``go`` ends a waiting script's read)."""

    def __init__(self, work: Path) -> None:
        os.mkfifo(work / "ready", 0o600)
        os.mkfifo(work / "go", 0o600)
        self.ready_fd = os.open(work / "ready", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.go_fd = os.open(work / "go", os.O_RDWR | os.O_CLOEXEC)

    async def wait(self, proc: spawn.Spawned) -> bool:
        """True once the script says the tasks are stopped and dumped; False if CRIU exits first."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                if os.read(self.ready_fd, 64) and not ready.done():
                    ready.set_result(None)

        loop.add_reader(self.ready_fd, readable)
        exited: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
        waiting: set[asyncio.Future[Any]] = {ready, exited}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(self.ready_fd)
            if not exited.done():
                exited.cancel()
        return ready.done()

    def answer(self, ok: bool) -> None:
        with contextlib.suppress(OSError):
            os.write(self.go_fd, b"0\n" if ok else b"1\n")

    def close(self) -> None:
        for fd in (self.ready_fd, self.go_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def read_record(runc_root: Path, container_id: str) -> dict[str, Any] | None:
    """runc's record of ``container_id`` (None when there is none to read)."""
    try:
        data = json.loads((runc_root / container_id / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def eligible(record: Mapping[str, Any] | None) -> bool:
    """Whether CRIU can dump the container of ``record`` without runc: its network and pid namespaces are
    its own (runc hands CRIU an external namespace otherwise) and the host has v1 cgroups."""
    if record is None or not criu_cli.eligible_host():
        return False
    config = record.get("config") or {}
    namespaces = {ns.get("type"): ns.get("path", "") for ns in config.get("namespaces") or []}
    return (
        "NEWNET" in namespaces
        and not namespaces["NEWNET"]
        and not namespaces.get("NEWPID", "")
        and isinstance(record.get("init_process_pid"), int)
        and bool(config.get("rootfs"))
    )


def _masked_files(pid: int, config: Mapping[str, Any]) -> list[str]:
    """The masked paths that are files in the container (runc binds ``/dev/null`` over them)."""
    out = []
    for path in config.get("mask_paths") or []:
        try:
            st = os.stat(f"/proc/{pid}/root/{str(path).lstrip('/')}")
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            out.append(str(path))
    return out


def criu_args(
    record: Mapping[str, Any],
    *,
    criu_binary: str,
    image_path: Path,
    work_path: Path,
    criu_opts: Mapping[str, bool],
    masked_files: list[str],
) -> list[str]:
    """``criu dump``'s command line with the options ``runc checkpoint --leave-running`` passes (pure)."""
    config = record["config"]
    args = [
        criu_binary, "dump", "--tree", str(record["init_process_pid"]), "--images-dir", str(image_path),
        "--work-dir", str(work_path), "--log-file", DUMP_LOG, "-v4", "--root", str(config["rootfs"]),
        "--manage-cgroups", "--empty-ns", "net", "--leave-running",
    ]
    criu_config = labels(config).get("org.criu.config")
    if criu_config:
        args += ["--config", criu_config]
    freezer = (record.get("cgroup_paths") or {}).get("freezer")
    if freezer:
        args += ["--freeze-cgroup", str(freezer)]
    args += criu_cli.option_flags(criu_opts)
    for m in config.get("mounts") or []:
        if m.get("device") == "bind":
            args += ["--ext-mount-map", f"{m['destination']}:{m['destination']}"]
    for path in masked_files:
        args += ["--ext-mount-map", f"{path}:/dev/null"]
    for d in config.get("devices") or []:
        if d.get("path"):
            args += ["--ext-mount-map", f"{d['path']}:{d['path']}"]
    return args


async def dump(
    record: Mapping[str, Any],
    *,
    image_path: Path,
    work_path: Path,
    criu_opts: Mapping[str, bool],
    criu_binary: str = "criu",
    timeout_s: float = 120.0,
    while_frozen: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Dump the container of ``record`` into ``image_path``; it keeps running. CRIU's log is
    ``work_path/dump.log``. Without ``while_frozen`` the caller has frozen the container (CRIU leaves it
    frozen); with it (needs :func:`can_call_back`) CRIU stops the running container itself and
    ``while_frozen()`` runs while it is stopped, after the images are written: if it raises, the dump
    fails (CRIU resumes the container) and the exception propagates."""
    pid = int(record["init_process_pid"])
    masked = await asyncio.to_thread(_masked_files, pid, record["config"])
    image_path.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(image_path / DESCRIPTORS_JSON, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(list(record.get("external_descriptors") or []), f)
    argv = criu_args(
        record, criu_binary=shutil.which(criu_binary) or criu_binary, image_path=image_path,
        work_path=work_path, criu_opts=criu_opts, masked_files=masked,
    )
    devnull = asyncio.subprocess.DEVNULL
    if while_frozen is None:
        await criu_cli.run(
            argv, what="criu dump", timeout_s=timeout_s, stdin=devnull, stdout=devnull, stderr=devnull
        )
        return
    hook = _PostDump(work_path)
    failure: list[BaseException] = []
    called: list[bool] = []

    async def converse(proc: spawn.Spawned) -> None:
        if not await hook.wait(proc):
            return  # CRIU ended before its post-dump action: its exit status tells
        called.append(True)
        try:
            await while_frozen()
        except BaseException as exc:
            failure.append(exc)
            hook.answer(False)
            return  # CRIU resumes the tasks and fails; the exception is raised once it has
        hook.answer(True)

    fifos_env = NATIVE_POST_DUMP_ENV
    if not criu_cli.has_patch(argv[0], NATIVE_POST_DUMP_MARKER):
        argv += ["--action-script", str(POST_DUMP_SCRIPT)]
        fifos_env = POST_DUMP_ENV
    wait_s = max(1, int(timeout_s))  # the bound on faasd's answer (faasd gone: the dump fails)
    try:
        await criu_cli.run(
            argv, what="criu dump", timeout_s=timeout_s, during=converse,
            env={**os.environ, fifos_env: str(work_path), POST_DUMP_TIMEOUT_ENV: str(wait_s)},
            stdin=devnull, stdout=devnull, stderr=devnull,
        )
    except RuntimeFailure:
        if failure:
            raise failure[0] from None
        raise
    finally:
        hook.close()
    if failure:
        raise failure[0]
    if not called:  # the caller's copy never ran: the capture would lack it
        raise RuntimeFailure(
            f"criu dump finished without its post-dump call-back (see {work_path / DUMP_LOG})"
        )
