"""The user namespaces idmapped mounts are made with: the mapping holds, and no holder task is left."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.rootfs import idmap, mounts

pytestmark = pytest.mark.integration

HOST_ID = (1 << 30) + 7 * 65536


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            out |= {int(p) for p in Path(f"/proc/{me}/task/{task}/children").read_text().split()}
        except OSError:
            continue
    return out


@pytest.mark.parametrize("make", [idmap.userns_fd, idmap._userns_fd_by_helper], ids=["clone", "helper"])
def test_a_new_user_namespace_maps_root_to_the_range(make: Callable[[int, int], int], tmp_path: Path) -> None:
    src, view = tmp_path / "src", tmp_path / "view"
    src.mkdir()
    view.mkdir()
    (src / "f").write_text("x")
    os.chown(src / "f", 0, 0)
    before = _children()
    ns = make(HOST_ID, 65536)
    try:
        assert os.readlink(f"/proc/self/fd/{ns}").startswith("user:[")
        assert os.readlink(f"/proc/self/fd/{ns}") != os.readlink("/proc/self/ns/user")
        mnt = idmap.idmapped_clone(src, ns)
        try:
            idmap.attach(mnt, view)
        finally:
            os.close(mnt)
    finally:
        os.close(ns)
    try:
        st = (view / "f").stat()
        assert (st.st_uid, st.st_gid) == (HOST_ID, HOST_ID)  # file root shows as the range's first id
    finally:
        mounts.umount(view, mounts.MNT_DETACH)
    assert _children() <= before  # the namespace's holder was killed and reaped
