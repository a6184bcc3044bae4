"""Running the build's tools: subprocesses with actionable errors, killing process groups, removing a
work dir that a killed debootstrap left mounts in."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faasd.errors import RuntimeFailure


def _run(
    args: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> str:
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise RuntimeFailure(
            f"{args[0]} is not installed; run scripts/setup-system.sh "
            f"(apt-get install umoci skopeo debootstrap)"
        ) from None
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what} did not finish within {timeout:.0f} s: {' '.join(args)}") from None
    if proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise RuntimeFailure(f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{out}")
    return proc.stdout


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/")
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mnt = line.split()[4]
                mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mnt)
                if mnt == prefix or mnt.startswith(prefix + "/"):
                    found.append(mnt)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def _remove_workdir(path: Path) -> None:
    """Unmount whatever a killed debootstrap left mounted (proc, sys, devpts), then delete."""
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "--lazy", mnt], capture_output=True, check=False)
    if _mounts_under(path):  # never rmtree into a live proc/sys mount
        raise RuntimeFailure(f"could not unmount everything under {path}; unmount it and delete it by hand")
    shutil.rmtree(path, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
