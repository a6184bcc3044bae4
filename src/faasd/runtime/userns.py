"""Host-wide allocation of user-namespace id ranges, one per sandbox.

Every runc sandbox with a user namespace (``Settings.userns`` / ``SandboxSpec.userns``) gets its own range
of :data:`~faasd.runtime.models.USERNS_SIZE` (65536) host uids and gids: slot ``i`` is
``FIRST_HOST_ID + i * 65536 ..``, with ``FIRST_HOST_ID = 2**30`` and :data:`SLOTS` slots, so every range
lies in ``[2**30, 2**31)``: far above the ids of host accounts and ``/etc/subuid`` ranges
(which start at 100000 and are empty on the reference host), never 0, and no two sandboxes share an id,
whatever run_dir or daemon they belong to. Per sandbox rather than per tenant: two sandboxes of the same
tenant cannot signal, ptrace or read each other's files through a shared id either.

Allocation works like the egress /30s of :mod:`faasd.runtime.network`: an ``O_EXCL`` lock file per slot in
``/run/faasd-userns/alloc`` (holding the sandbox id) plus a ``<sandbox id>.slot`` marker, so concurrent
daemons never hand out a slot twice and a crashed daemon's slots are found again by sandbox id
(``SandboxManager`` releases them on destroy and in ``cleanup_orphans``, through its teardown).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from faasd.errors import CapacityError
from faasd.rootfs import idmap, mounts
from faasd.runtime import network, nsutil
from faasd.runtime.models import USERNS_SIZE, UserNamespace

ALLOC_DIR = Path("/run/faasd-userns/alloc")
STAGE_DIR = Path("/run/faasd-userns/roots")
"""Where a sandbox's root and bind sources are mounted for runc (``<STAGE_DIR>/<id>/``): runc's init resolves
them as the sandbox's root, i.e. as an unprivileged host id, so every directory above them must be
traversable by anyone (0711), which the run_dir's ancestors need not be (pytest's tmp dirs are 0700)."""
FIRST_HOST_ID = 1 << 30
SLOTS = ((1 << 31) - FIRST_HOST_ID) // USERNS_SIZE
"""16384 slots: at most that many sandboxes with a user namespace on one host."""


def stage_dir(sandbox_id: str) -> Path:
    """A fresh, traversable (0711) directory for the mounts runc resolves inside the user namespace."""
    for d in (STAGE_DIR.parent, STAGE_DIR):
        d.mkdir(mode=0o711, exist_ok=True)
        if d.stat().st_mode & 0o111 != 0o111:
            d.chmod(0o711)
    path = STAGE_DIR / sandbox_id
    path.mkdir(mode=0o711, exist_ok=True)
    path.chmod(0o711)
    return path


NS_DIR = Path("/run/faasd-userns/ns")
"""Pins of the sandboxes' user namespaces (``<NS_DIR>/<id>``, bind mounts of ``/proc/<pid>/ns/user``)."""


def userns_path(sandbox_id: str) -> Path:
    return NS_DIR / sandbox_id


def pin_userns(sandbox_id: str, ns: UserNamespace) -> Path:
    """Create a user namespace with mapping ``ns`` and pin it at :func:`userns_path` (one fork, ~2 ms).

    It is what the sandbox's idmapped mounts are made with (:mod:`faasd.rootfs.idmap`); the container's own
    user namespace, with the same mapping, is made by runc (or by CRIU on restore) together with the
    container's netns, which must belong to it: ``runc exec`` joins the user namespace first and then the
    netns, and CRIU restores the netns inside the user namespace it re-creates. Undone by :func:`remove`.
    """
    NS_DIR.mkdir(parents=True, exist_ok=True)
    pin = userns_path(sandbox_id)
    fd = os.open(str(pin), os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        ns_fd = idmap.userns_fd(ns.host_id, ns.size)
        try:
            mounts.mount(f"/proc/self/fd/{ns_fd}", pin, None, mounts.MS_BIND)
        finally:
            os.close(ns_fd)
    except BaseException:
        remove(sandbox_id)
        raise
    return pin


def pin_netns(sandbox_id: str, pid: int, *, lo_up: bool = True) -> Path:
    """Pin the netns of the sandbox's init ``pid`` (made by runc or CRIU inside the sandbox's user
    namespace) at ``network.netns_path``, where the proxy, egress setup and teardown find it."""
    network.ensure_netns_dir()
    path = network.netns_path(sandbox_id)
    fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        mounts.mount(f"/proc/{pid}/ns/net", path, None, mounts.MS_BIND)
        if lo_up:
            nsutil.call_in_netns(path, network.lo_up)
    except BaseException:
        network.delete_netns(sandbox_id)
        raise
    return path


def remove(sandbox_id: str) -> list[str]:
    """Unmount the stage dir of ``sandbox_id`` and unpin its user namespace; returns what stayed mounted.
    Idempotent (the range itself is given back by :func:`release`)."""
    left: list[str] = []
    stage = STAGE_DIR / sandbox_id
    if stage.exists():
        left = mounts.unmount_all_under(stage)
        if not left:
            shutil.rmtree(stage, ignore_errors=True)
    pin = userns_path(sandbox_id)
    if pin.exists():
        with contextlib.suppress(OSError):
            mounts.umount(pin, mounts.MNT_DETACH)
        try:
            pin.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(str(pin))
    return left


def _marker(sandbox_id: str) -> Path:
    return ALLOC_DIR / f"{sandbox_id}.slot"


def _range(slot: int) -> UserNamespace:
    return UserNamespace(FIRST_HOST_ID + slot * USERNS_SIZE, USERNS_SIZE)


def allocated(sandbox_id: str) -> UserNamespace | None:
    """The range held by ``sandbox_id``, if any."""
    try:
        slot = int(_marker(sandbox_id).read_text())
        if (ALLOC_DIR / str(slot)).read_text() != sandbox_id:
            return None
    except (OSError, ValueError):
        return None
    return _range(slot)


def allocate(sandbox_id: str) -> UserNamespace:
    """A free range for ``sandbox_id`` (the one it already holds, if any). Raises CapacityError when full."""
    held = allocated(sandbox_id)
    if held is not None:
        return held
    ALLOC_DIR.mkdir(parents=True, exist_ok=True)
    start = int(hashlib.sha256(sandbox_id.encode()).hexdigest()[:8], 16) % SLOTS
    for k in range(SLOTS):
        slot = (start + k) % SLOTS
        try:
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
            fd = os.open(str(ALLOC_DIR / str(slot)), flags, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(sandbox_id)
        _marker(sandbox_id).write_text(str(slot))
        return _range(slot)
    raise CapacityError(
        f"all {SLOTS} user-namespace id ranges are in use; destroy idle sandboxes (or run cleanup_orphans)"
    )


def release(sandbox_id: str) -> None:
    """Give the range of ``sandbox_id`` back. Idempotent."""
    marker = _marker(sandbox_id)
    with contextlib.suppress(OSError, ValueError):
        slot = ALLOC_DIR / str(int(marker.read_text()))
        if slot.read_text() == sandbox_id:
            slot.unlink()
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()


def holders() -> dict[str, UserNamespace]:
    """Every allocated range by sandbox id (diagnostics and leak checks)."""
    out: dict[str, UserNamespace] = {}
    try:
        entries = list(ALLOC_DIR.iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                out[p.read_text()] = _range(int(p.name))
    return out


# ------------------------------------------------------------------ CRIU images
_CRIU_USERNS_PREFIX = "userns-"


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        low, v = v & 0x7F, v >> 7
        if v:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def userns_image(ns: UserNamespace) -> bytes:
    """The body of CRIU's ``userns-<id>.img`` entry for ``ns`` (protobuf ``userns_entry``: ``uid_map`` and
    ``gid_map``, each one ``uid_gid_extent{first=0, lower_first=host_id, count=size}``)."""
    extent = b"\x08" + _varint(0) + b"\x10" + _varint(ns.host_id) + b"\x18" + _varint(ns.size)
    field = _varint(len(extent)) + extent
    return b"\x0a" + field + b"\x12" + field


def images_for(image_dir: Path, dest: Path, ns: UserNamespace) -> Path:
    """A per-restore copy of the CRIU images in ``image_dir`` whose user namespace maps onto ``ns``.

    CRIU re-creates the dumped user namespace with the map it finds in the image, i.e. the range of the
    sandbox the snapshot was taken from; the restored sandbox has its own. ``dest`` gets every image as a
    hard link (a copy across filesystems) except ``userns-*.img``, which is rewritten for ``ns``; the
    snapshot stays shared and unchanged. Not symlinks: the restored tasks open some images themselves,
    from inside the user namespace, and runc's image dir is 0700 (root only). Returns ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=False)
    for entry in os.scandir(image_dir):
        target = dest / entry.name
        if entry.name.startswith(_CRIU_USERNS_PREFIX) and entry.name.endswith(".img"):
            head = Path(entry.path).read_bytes()[:8]  # two magics; then one (size, message) entry
            body = userns_image(ns)
            target.write_bytes(head + len(body).to_bytes(4, "little") + body)
        elif entry.is_file(follow_symlinks=False):
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)
    return dest
