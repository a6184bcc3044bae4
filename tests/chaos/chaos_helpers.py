"""Helpers for the chaos suite: leak checks that look only at the ids a test created."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from pathlib import Path

from faasd.config import Settings
from faasd.rootfs import mounts
from faasd.runtime import SandboxSpec
from faasd.runtime import cgroups as cg
from faasd.runtime import network as net


def new_id() -> str:
    return "fd-chaos" + uuid.uuid4().hex[:10]


def runc_ids(settings: Settings) -> set[str]:
    res = subprocess.run(
        ["runc", "--root", str(settings.runc_root), "list", "-q"], capture_output=True, text=True, check=False
    )
    return set(res.stdout.split())


def leaks(settings: Settings, sandbox_id: str) -> list[str]:
    """Every trace of ``sandbox_id`` still on the host (empty = clean)."""
    found: list[str] = []
    if sandbox_id in runc_ids(settings):
        found.append(f"runc container {sandbox_id}")
    if (settings.runc_root / sandbox_id).exists():
        found.append(f"runc state dir {settings.runc_root / sandbox_id}")
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
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next((ln for ln in f if ln.startswith("State:")), "")
    except OSError:
        return False
    return "Z" not in state.split()[1:2]


def reap(pids: list[int]) -> None:
    """Reap our own zombie children among ``pids`` (inits re-parented to us, the subreaper)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def write_runc_wrapper(
    path: Path, *, kill_self_after: str | None = None, kill_self_before: str | None = None
) -> Path:
    """A ``runc`` stand-in that runs the real runc but gets SIGKILLed around one subcommand."""
    lines = ["#!/bin/sh"]
    if kill_self_before:
        lines.append(f'case " $* " in *" {kill_self_before} "*) kill -9 $$ ;; esac')
    if kill_self_after:
        lines.append(f'case " $* " in *" {kill_self_after} "*) runc "$@"; kill -9 $$ ;; esac')
    lines.append('exec runc "$@"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


class Ids:
    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.used: list[str] = []

    def new(self) -> str:
        sid = new_id()
        self.used.append(sid)
        return sid

    def spec(self, *args: str, **kw: object) -> SandboxSpec:
        kw.setdefault("id", self.new())
        return SandboxSpec(lowers=[self.rootfs], args=list(args), **kw)  # type: ignore[arg-type]
