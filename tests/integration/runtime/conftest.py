"""Fixtures for runtime integration tests: a manager on private dirs, spec factory, leak checks by id."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from faasd.rootfs import mounts
from faasd.runtime import SandboxManager, SandboxSpec
from faasd.runtime import cgroups as cg
from faasd.runtime import network as net


def leaks(settings: Settings, sandbox_id: str) -> list[str]:
    """Every trace of ``sandbox_id`` still on the host (empty list = clean)."""
    found: list[str] = []
    res = subprocess.run(
        ["runc", "--root", str(settings.runc_root), "list", "-q"], capture_output=True, text=True, check=False
    )
    if sandbox_id in res.stdout.split():
        found.append(f"runc container {sandbox_id}")
    bundle = settings.sandboxes_dir / sandbox_id
    found += [f"mount {m}" for m in mounts.mounts_under(bundle)]
    if bundle.exists():
        found.append(f"bundle dir {bundle}")
    for _, mnt in cg.hierarchies():
        p = mnt / "faasd" / sandbox_id
        if p.exists():
            found.append(f"cgroup {p}")
    if (net.NETNS_DIR / sandbox_id).exists():
        found.append(f"netns {sandbox_id}")
    host_if, _ = net._ifnames(sandbox_id)
    if Path(f"/sys/class/net/{host_if}").exists():
        found.append(f"veth {host_if}")
    if (net.ALLOC_DIR / f"{sandbox_id}.idx").exists():
        found.append("egress /30 allocation")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    found += [f"loop device {ln.split(':')[0]}" for ln in loops.splitlines() if f"/{sandbox_id}" in ln]
    for table in ("nat", "filter"):
        rules = subprocess.run(
            ["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
        )
        if f"faasd:{sandbox_id}" in rules.stdout:
            found.append(f"iptables {table} rule")
    return found


@pytest.fixture
def sid(unique_id: str) -> str:
    return f"fd-{unique_id}"


@pytest.fixture
async def manager(settings: Settings) -> AsyncIterator[SandboxManager]:
    m = SandboxManager(settings)
    yield m
    # anything a test left behind (e.g. after a failed assertion) is destroyed here
    for sb in list(m._sandboxes.values()):
        try:
            await sb.destroy()
        except Exception as exc:  # pragma: no cover - reported, not hidden
            print(f"cleanup of {sb.id} failed: {exc}")
    await m.cleanup_orphans()


@pytest.fixture
def make_spec(python_rootfs: Path, sid: str) -> Callable[..., SandboxSpec]:
    def make(*args: str, **kw: Any) -> SandboxSpec:
        kw.setdefault("id", sid)
        return SandboxSpec(lowers=[python_rootfs], args=list(args) if args else None, **kw)

    return make


@pytest.fixture
def no_leaks(settings: Settings, sid: str) -> Callable[[], None]:
    def check() -> None:
        assert leaks(settings, sid) == []

    return check


@pytest.fixture
def leaks_of(settings: Settings) -> Callable[[str], list[str]]:
    """``leaks_of(sandbox_id)``: traces of another id this test created (e.g. a restored sandbox)."""
    return lambda sandbox_id: leaks(settings, sandbox_id)
