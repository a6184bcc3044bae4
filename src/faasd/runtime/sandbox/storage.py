"""A create or restore that failed on a full disk: which filesystem (run_dir or data_dir) to blame."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from faasd.errors import RuntimeFailure, StorageFullError

_RUN_DIR_NEARLY_FULL = 1 << 20
"""Free bytes in run_dir below which a failing ``runc create``/``restore`` is a StorageFullError."""


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62  # cannot tell: not "full"
    return st.f_bavail * st.f_frsize


def storage_full_error(
    exc: BaseException, what: str, run_dir: Path, data_dir: Path
) -> StorageFullError | None:
    """A :class:`StorageFullError` naming the full directory if ``exc`` was caused by a full disk.

    ENOSPC/EDQUOT in our own writes is recognised by errno. runc does not always say so (``unable to
    store init state: %!w(<nil>)``, or no output at all when it cannot even write its log), so a
    runtime failure while run_dir has (almost) no space left is attributed to the full run_dir.
    """
    if isinstance(exc, StorageFullError):
        return None
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
