"""Host capacity checks made before anything is created: a disk limit the host cannot hold is a 400.

A sandbox's writable layer is at most ``disk_mb`` (a loop-mounted ext4 image under ``data_dir/scratch``,
or a tmpfs charged to its memory). The image file is sparse, so an oversized limit would be accepted and
only fail later, inside the sandbox or for its neighbours, when the host filesystem fills. So a requested
disk limit must fit into the free space of the data dir's filesystem minus ``Settings.disk_reserve_mb``
(kept for the database, images and snapshots).
"""

from __future__ import annotations

import os
from pathlib import Path

from faasd.config import Settings
from faasd.errors import DiskLimitTooLargeError


def free_mb(path: Path) -> int:
    """Free MiB (for unprivileged use) on the filesystem of ``path`` (or of its nearest existing parent)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return (st.f_bavail * st.f_frsize) >> 20


def disk_limit_room_mb(settings: Settings) -> int:
    """The largest disk limit a sandbox may ask for right now."""
    return max(0, free_mb(settings.data_dir) - settings.disk_reserve_mb)


def check_disk_limit(settings: Settings, disk_mb: int, what: str = "the sandbox") -> None:
    """Raise :class:`DiskLimitTooLargeError` (400) if ``disk_mb`` does not fit on the host."""
    room = disk_limit_room_mb(settings)
    if disk_mb > room:
        free = free_mb(settings.data_dir)
        raise DiskLimitTooLargeError(
            f"disk limit of {disk_mb} MiB for {what} is larger than this host can hold: {free} MiB free "
            f"under {settings.data_dir}, of which {settings.disk_reserve_mb} MiB are reserved "
            f"(FAASD_DISK_RESERVE_MB), so at most {room} MiB; ask for less disk",
            disk_mb=disk_mb,
            max_disk_mb=room,
            free_mb=free,
            reserve_mb=settings.disk_reserve_mb,
        )
