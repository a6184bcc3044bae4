"""Helpers for the chaos suite: fresh ids (leak-checked by faasd.testing.leaks), liveness, a runc stand-in."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from faasd.runtime import SandboxSpec


def new_id() -> str:
    return "fd-chaos" + uuid.uuid4().hex[:10]


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


def write_init_killing_runc(path: Path) -> Path:
    """A ``runc`` stand-in that runs the real runc, and after a successful ``create`` SIGKILLs the
    container's init (blocked on its exec FIFO): the container dies between create and start."""
    path.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, signal, subprocess, sys\n"
        "args = sys.argv[1:]\n"
        "rc = subprocess.call(['runc', *args])\n"
        "if rc == 0 and 'create' in args:\n"
        "    root = args[args.index('--root') + 1] if '--root' in args else '/run/runc'\n"
        "    state = subprocess.run(['runc', '--root', root, 'state', args[-1]],\n"
        "                           capture_output=True, check=True)\n"
        "    os.kill(json.loads(state.stdout)['pid'], signal.SIGKILL)\n"
        "sys.exit(rc)\n"
    )
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
