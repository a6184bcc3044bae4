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

from faasd.errors import CapacityError, RuntimeFailure
from faasd.rootfs import mounts
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


def create_namespaces(sandbox_id: str, ns: UserNamespace) -> Path:
    """Create and pin the user namespace of ``sandbox_id`` (mapping ``ns``, at :func:`userns_path`) and its
    network namespace *owned by that user namespace* (at ``network.netns_path``, ``lo`` up); returns the
    netns path. Blocking (one fork, ~2-5 ms); undone by :func:`remove` and ``network.delete_netns``.

    Why we make both instead of letting runc make the user namespace: ``runc exec`` joins the container's
    user namespace first and then its netns, which fails (EPERM) unless the netns belongs to that user
    namespace; and a restore can pass both to CRIU as existing namespaces (``join_ns``), so a restored
    sandbox runs in its own, new range rather than the one recorded in the image.
    """
    network.ensure_netns_dir()
    NS_DIR.mkdir(parents=True, exist_ok=True)
    user_pin, net_pin = userns_path(sandbox_id), network.netns_path(sandbox_id)
    for pin in (user_pin, net_pin):
        fd = os.open(str(pin), os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
        os.close(fd)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: unshare user ns, wait for its maps, unshare the netns, wait to be pinned
        code = 1
        try:
            os.close(go_w)
            os.close(ready_r)
            if nsutil.unshare_raw(nsutil.CLONE_NEWUSER) == 0:
                os.write(ready_w, b"1")
                if os.read(go_r, 1) == b"1" and nsutil.unshare_raw(nsutil.CLONE_NEWNET) == 0:
                    os.write(ready_w, b"2")
                    os.read(go_r, 1)
                    code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise RuntimeFailure(f"could not create the user namespace of sandbox {sandbox_id}")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {ns.host_id} {ns.size}\n")
        os.write(go_w, b"1")
        if os.read(ready_r, 1) != b"2":
            raise RuntimeFailure(f"could not create the network namespace of sandbox {sandbox_id}")
        mounts.mount(f"/proc/{pid}/ns/user", user_pin, None, mounts.MS_BIND)
        mounts.mount(f"/proc/{pid}/ns/net", net_pin, None, mounts.MS_BIND)
        nsutil.call_in_netns(net_pin, network.lo_up)
    except BaseException:
        remove(sandbox_id)
        network.delete_netns(sandbox_id)
        raise
    finally:
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)
    return net_pin


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
