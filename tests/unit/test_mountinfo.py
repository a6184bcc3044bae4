"""``/proc/self/mountinfo`` parsing (``faasd.rootfs.mounts``): points, types, super options, escapes."""

from __future__ import annotations

import pytest

from faasd.rootfs.mounts import MountEntry, parse_mountinfo

pytestmark = pytest.mark.unit


def test_entries_with_escaped_points_and_super_options() -> None:
    text = (
        "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw,discard\n"
        "30 22 0:26 / /mnt/my\\040dir rw shared:5 - tmpfs tmpfs rw,size=1024k\n"
        "garbage line\n"
        "33 24 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    assert parse_mountinfo(text) == [
        MountEntry("/", "ext4", ("rw", "discard")),
        MountEntry("/mnt/my dir", "tmpfs", ("rw", "size=1024k")),  # optional fields before " - " skipped
        MountEntry("/sys/fs/cgroup/unified", "cgroup2", ("rw", "nsdelegate")),
    ]
