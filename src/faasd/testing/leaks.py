"""Leak checks for real sandboxes: did a sandbox id leave anything behind on the host?

A sandbox is many things on the host: a ``runc`` container and its state dir, a bundle dir with
overlay/tmpfs/loop mounts, cgroups ``faasd/<id>`` in every hierarchy, a network namespace with a veth
pair, an egress /30 allocation and iptables rules, a user-namespace id range and its pin,
a loop device for its scratch disk, CRIU work dirs
during a restore. :func:`sandbox_leaks` reports every one of them that still exists for one id::

    from faasd.testing.leaks import assert_no_leaks, sandbox_leaks

    assert sandbox_leaks(settings, "fd-mytest1") == []       # [] = clean
    assert_no_leaks(settings, ["fd-a", "fd-b"])              # AssertionError naming what is left

The checks look **only** at the ids you pass (never at "every ``fd-*`` on the host"), so they stay correct
while other sandboxes (another test, a daemon) run on the same machine. Pass every id your test
created, including restored copies.

Fixtures built on them (for tests that drive the runtime or the platform directly, in-process):

* :func:`sandbox_manager`: an ``async with`` :class:`~faasd.runtime.SandboxManager` on the given settings
  that destroys whatever sandboxes the test left and cleans up orphans under its run dir on exit.
* :func:`leak_checked_platform`: an ``async with`` real :class:`~faasd.platform.core.Platform` (runc
  sandboxes, workers) that records every sandbox id it creates or restores and, after closing the
  platform, asserts none of them left a trace.
* :func:`leak_checked_server`: a ``with`` daemon subprocess (:class:`~faasd.testing.server.FaasdServer`)
  that must not leave a runc container behind when it is stopped (its private dirs are removed).

Most checks need root (as do the sandboxes); a check that cannot run (no ``iptables``, say) finds nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faasd.config import Settings
from faasd.runtime import SandboxManager, userns
from faasd.runtime import cgroups as cg
from faasd.runtime import network as net
from faasd.runtime.sandbox.userns_setup import restore_images_dirs
from faasd.snapshots.image_cache import entries_in

if TYPE_CHECKING:
    from faasd.images.store import ImageStore
    from faasd.platform.core import Platform
    from faasd.testing.server import FaasdServer

__all__ = [
    "PlatformUnderTest",
    "assert_no_leaks",
    "find_leaks",
    "leak_checked_platform",
    "leak_checked_server",
    "runc_ids",
    "sandbox_leaks",
    "sandbox_manager",
    "track_sandbox_ids",
]

IPTABLES_TABLES = ("nat", "filter")


def _output(cmd: list[str]) -> str:
    """stdout of ``cmd`` ("" if it cannot run): a leak check must not fail because a tool is missing."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def runc_ids(runc_root: Path) -> set[str]:
    """Ids of the containers ``runc --root runc_root`` knows (any state)."""
    return set(_output(["runc", "--root", str(runc_root), "list", "-q"]).split())


@dataclass
class _HostState:
    """What is on the host right now, read once for all the ids being checked."""

    runc: set[str]
    mount_lines: list[str]
    loops: list[str]
    iptables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, settings: Settings) -> _HostState:
        return cls(
            runc=runc_ids(settings.runc_root),
            mount_lines=Path("/proc/self/mounts").read_text().splitlines(),
            loops=_output(["losetup", "-a"]).splitlines(),
            iptables={t: _output(["iptables", "-w", "-t", t, "-S"]) for t in IPTABLES_TABLES},
        )


def _leaks_of(settings: Settings, sandbox_id: str, host: _HostState) -> list[str]:
    found: list[str] = []
    if sandbox_id in host.runc:
        found.append(f"runc container {sandbox_id}")
    state_dir = settings.runc_root / sandbox_id
    if state_dir.exists():
        found.append(f"runc state dir {state_dir}")
    # any mount that names the id: under its bundle or runc state dir, a CRIU work dir ``<id>-<n>`` (a
    # failed restore can leave its cgroup yard mounted there), a scratch image as a mount source
    found += [f"mount {ln.split()[1]} ({ln.split()[0]})" for ln in host.mount_lines if sandbox_id in ln]
    bundle = settings.sandboxes_dir / sandbox_id
    if bundle.exists():
        found.append(f"bundle dir {bundle}")
    for _, mnt in cg.hierarchies():
        p = mnt / "faasd" / sandbox_id
        if p.exists():
            found.append(f"cgroup {p}")
    if net.netns_path(sandbox_id).exists():
        found.append(f"netns {sandbox_id}")
    host_if, _ = net._ifnames(sandbox_id)
    if Path(f"/sys/class/net/{host_if}").exists():
        found.append(f"veth {host_if}")
    if (net.ALLOC_DIR / f"{sandbox_id}.idx").exists():
        found.append("egress /30 allocation")
    if userns.allocated(sandbox_id) is not None or (userns.ALLOC_DIR / f"{sandbox_id}.slot").exists():
        found.append("user namespace id range")
    for p in (
        userns.userns_path(sandbox_id),
        userns.STAGE_DIR / sandbox_id,
        *restore_images_dirs(settings, sandbox_id),
    ):
        if p.exists():
            found.append(f"user namespace pin or stage dir {p}")
    found += [f"loop device {ln.split(':')[0]}" for ln in host.loops if f"/{sandbox_id}" in ln]
    for table, rules in host.iptables.items():
        if f"faasd:{sandbox_id}" in rules:
            found.append(f"iptables {table} rule")
    return found


def find_leaks(settings: Settings, sandbox_ids: Iterable[str]) -> dict[str, list[str]]:
    """``{id: [what is left]}`` for each of ``sandbox_ids`` that left a trace (``{}`` = all clean)."""
    ids = list(dict.fromkeys(sandbox_ids))
    if "" in ids:
        raise ValueError("an empty sandbox id cannot be leak-checked (pass the ids the test created)")
    if not ids:
        return {}
    host = _HostState.read(settings)
    return {sid: found for sid in ids if (found := _leaks_of(settings, sid, host))}


def sandbox_leaks(settings: Settings, sandbox_id: str) -> list[str]:
    """Every trace of ``sandbox_id`` still on the host (empty list = clean)."""
    return find_leaks(settings, [sandbox_id]).get(sandbox_id, [])


def assert_no_leaks(settings: Settings, sandbox_ids: Iterable[str]) -> None:
    """Raise :class:`AssertionError` naming every trace any of ``sandbox_ids`` left."""
    left = find_leaks(settings, sandbox_ids)
    assert not left, f"sandboxes left traces on the host: {left}"


@contextlib.asynccontextmanager
async def sandbox_manager(settings: Settings) -> AsyncIterator[SandboxManager]:
    """A :class:`SandboxManager` on ``settings``; on exit it destroys the sandboxes still open (a failure
    is printed, not raised, so the test's own error stays the one reported) and cleans up orphans under
    ``settings.run_dir``. Check leaks *inside* the block (or in a fixture that depends on this one)."""
    m = SandboxManager(settings)
    try:
        yield m
    finally:
        await m.settle()  # teardowns run() left in the background
        for sb in list(m._sandboxes.values()):
            try:
                await sb.destroy()
            except Exception as exc:  # reported, not hidden
                print(f"cleanup of {sb.id} failed: {exc}")
        await m.cleanup_orphans()


def track_sandbox_ids(manager: SandboxManager) -> set[str]:
    """A set that receives the id of every sandbox ``manager`` creates or restores from now on."""
    seen: set[str] = set()
    orig_create, orig_restore = manager.create, manager.restore

    async def create(spec: Any, *args: Any, **kw: Any) -> Any:
        seen.add(spec.id)
        return await orig_create(spec, *args, **kw)

    async def restore(spec: Any, *args: Any, **kw: Any) -> Any:
        seen.add(spec.id)
        return await orig_restore(spec, *args, **kw)

    manager.create = create  # type: ignore[method-assign]
    manager.restore = restore  # type: ignore[method-assign]
    return seen


@dataclass
class PlatformUnderTest:
    """What :func:`leak_checked_platform` yields; add ids to ``sandbox_ids`` to have them checked too."""

    platform: Platform
    manager: SandboxManager
    sandbox_ids: set[str]


@contextlib.asynccontextmanager
async def leak_checked_platform(
    settings: Settings,
    images: ImageStore,
    *,
    poll_interval_s: float = 0.1,
    reaper_interval_s: float = 0.2,
    configure: Callable[[Platform], None] | None = None,
) -> AsyncIterator[PlatformUnderTest]:
    """A started real :class:`Platform` (runc sandboxes via a :class:`SandboxManager`, workers from
    ``images``), with fast poll/reaper intervals. ``configure(platform)`` runs before it starts. On exit it
    is closed, orphans are cleaned up, the database is disposed, and then (unless the block raised)
    :func:`assert_no_leaks` runs over every sandbox id it created or restored."""
    from faasd.platform.core import Platform, PlatformOptions
    from faasd.platform.runtime_adapter import RuntimeWorkerFactory

    manager = SandboxManager(settings)
    p = Platform(
        settings,
        RuntimeWorkerFactory(settings, manager, images),
        images=images,
        sandboxes=manager,
        options=PlatformOptions(poll_interval_s=poll_interval_s, reaper_interval_s=reaper_interval_s),
    )
    if configure is not None:
        configure(p)
    env = PlatformUnderTest(p, manager, track_sandbox_ids(manager))
    await p.start()
    try:
        yield env
    finally:
        await p.close()
        await manager.cleanup_orphans()
        p.db.dispose()
    assert_no_leaks(settings, env.sandbox_ids)
    held = memory_images(settings)
    assert not held, f"snapshot process images still held in memory after the platform closed: {held}"


def memory_images(settings: Settings) -> list[str]:
    """Snapshot ids whose process image is unpacked in the image cache (a tmpfs) of ``settings``."""
    return sorted(sid for _, sid, _ in entries_in(settings.image_cache_dir))


@contextlib.contextmanager
def leak_checked_server(*, env: Mapping[str, str] | None = None, auth: bool = True) -> Iterator[FaasdServer]:
    """A started :class:`~faasd.testing.server.FaasdServer` (``env``: extra daemon environment) for a test
    that must run it: ``pytest.fail`` if the daemon cannot start. On exit (also after a failure) it is
    stopped and its dirs removed; any runc container it left running is killed and fails the test."""
    import pytest

    from faasd.testing.server import FaasdServer, PlatformUnavailable

    try:
        server = FaasdServer.start(env=env, auth=auth)
    except PlatformUnavailable as exc:
        pytest.fail(f"the faasd daemon did not start: {exc}")
    try:
        yield server
    finally:
        leaked = server.stop()
        assert not leaked, f"the daemon left sandboxes running after a clean stop: {leaked}"
