"""What faasd's direct CRIU dumps and restores (:mod:`faasd.runtime.criu_dump`,
:mod:`faasd.runtime.criu_restore`) share: the host check, CRIU's options flags, running one ``criu``
process, and runc's ``descriptors.json``."""

from __future__ import annotations

import asyncio
import functools
import mmap
import os
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from faasd.errors import RuntimeFailure
from faasd.runtime import cgroups, spawn

DESCRIPTORS_JSON = "descriptors.json"
"""runc's list of the dumped init's fds 0-2 (``pipe:[ino]``, ``/dev/null``, ...), in the CRIU image dir."""

_FLAGS = (
    ("--tcp-established", "tcp_established"), ("--ext-unix-sk", "ext_unix_sk"),
    ("--file-locks", "file_locks"), ("--shell-job", "shell_job"),
)


def eligible_host() -> bool:
    """Whether this host's cgroups are v1 or hybrid (faasd writes v1 cgroup files for a direct restore, and
    runc hands CRIU other options on v2-only hosts) and faasd runs as root."""
    return not cgroups.is_v2_only() and os.geteuid() == 0


def has_patch(binary: str, marker: str) -> bool:
    """Whether the CRIU executable ``binary`` (a path) carries faasd's patch ``marker`` (each patch of
    ``scripts/criu-patches`` compiles its marker string into CRIU's log lines). Read once per binary."""
    try:
        st = os.stat(binary)
    except OSError:
        return False
    return _has_marker(binary, st.st_mtime_ns, st.st_size, marker.encode())


@functools.lru_cache(maxsize=16)
def _has_marker(binary: str, mtime_ns: int, size: int, marker: bytes) -> bool:
    try:
        with open(binary, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(marker) >= 0
    except (OSError, ValueError):
        return False


def option_flags(criu_opts: Mapping[str, bool]) -> list[str]:
    """CRIU's flags for ``criu_opts`` (keys ``tcp_established``, ``ext_unix_sk``, ``file_locks``,
    ``shell_job``)."""
    return [flag for flag, key in _FLAGS if criu_opts.get(key, False)]


async def run(
    argv: Sequence[str],
    *,
    what: str,
    timeout_s: float,
    details: Mapping[str, Any] | None = None,
    during: Callable[[spawn.Spawned], Awaitable[None]] | None = None,
    **stdio: Any,
) -> None:
    """Run ``argv`` (a ``criu`` command) to its end; :class:`RuntimeFailure` (with ``details``) naming
    ``what`` when it fails or outlives ``timeout_s`` (then it is killed). ``during(process)`` is awaited
    first, under the same time limit (a conversation with the running CRIU). ``stdio``: stdin, stdout,
    stderr, cwd and env as :func:`faasd.runtime.spawn.start` takes them (spawned with vfork: see there)."""
    try:
        proc = spawn.start(argv, **stdio)
    except OSError as exc:
        raise RuntimeFailure(f"cannot start {what}: {exc}", **(details or {})) from exc
    try:
        async with asyncio.timeout(timeout_s):
            if during is not None:
                await during(proc)
            rc = await proc.wait()
    except BaseException as exc:
        await proc.stop()
        if isinstance(exc, TimeoutError):
            raise RuntimeFailure(f"{what} did not finish within {timeout_s:g} s", **(details or {})) from None
        raise
    if rc != 0:
        raise RuntimeFailure(f"{what} exited with status {rc}", **(details or {}))


STATS_DUMP = "stats-dump"
"""CRIU's statistics of a dump, written into its work dir."""
_SERVICE_MAGIC, _STATS_MAGIC = 0x55105940, 0x57093306
_DUMP_STATS_FIELDS = {1: "freezing_us", 2: "frozen_us", 3: "memdump_us", 4: "memwrite_us", 7: "pages_written"}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def read_dump_stats(work_dir: Path) -> dict[str, int]:
    """CRIU's own timings of a dump (``stats-dump``: ``StatsEntry.dump`` of CRIU's ``stats.proto``), in
    microseconds: ``freezing_us`` (stopping the tasks), ``frozen_us`` (from all stopped until resumed),
    ``memdump_us``, ``memwrite_us``, and ``pages_written``. Empty when the file is missing or is not
    what this reader knows (two magics, a length, then protobuf varint and length-delimited fields)."""
    try:
        raw = (work_dir / STATS_DUMP).read_bytes()
        magic1, magic2, size = struct.unpack_from("<III", raw)
        if (magic1, magic2) != (_SERVICE_MAGIC, _STATS_MAGIC):
            return {}
        msg = raw[12 : 12 + size]
        out: dict[str, int] = {}
        pos = 0
        while pos < len(msg):  # StatsEntry: field 1 = DumpStatsEntry
            key, pos = _varint(msg, pos)
            if key & 7 != 2:
                return {}
            length, pos = _varint(msg, pos)
            inner, pos = msg[pos : pos + length], pos + length
            if key >> 3 != 1:
                continue
            ipos = 0
            while ipos < len(inner):
                ikey, ipos = _varint(inner, ipos)
                if ikey & 7 != 0:  # DumpStatsEntry has varint fields only
                    return out
                value, ipos = _varint(inner, ipos)
                name = _DUMP_STATS_FIELDS.get(ikey >> 3)
                if name:
                    out[name] = value
        return out
    except (OSError, struct.error, IndexError):
        return {}
