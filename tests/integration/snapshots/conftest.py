"""Fixtures for snapshot integration tests: leak checks limited to the ids a test created."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.rootfs import mounts
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
    found += [f"mount {m}" for m in mounts.mounts_under(settings.runc_root / sandbox_id)]
    bundle = settings.sandboxes_dir / sandbox_id
    found += [f"mount {m}" for m in mounts.mounts_under(bundle)]
    # CRIU's work dirs of this id (a failed restore can leave its cgroup yard mounted there)
    found += [f"mount {m}" for m in mounts.mounts_under(settings.run_dir / "criu-work")
              if Path(m).relative_to(settings.run_dir / "criu-work").parts[0].startswith(sandbox_id)]
    if bundle.exists():
        found.append(f"bundle {bundle}")
    for _, mnt in cg.hierarchies():
        if (mnt / "faasd" / sandbox_id).exists():
            found.append(f"cgroup {mnt / 'faasd' / sandbox_id}")
    if (net.NETNS_DIR / sandbox_id).exists():
        found.append(f"netns {sandbox_id}")
    return found


@pytest.fixture
def no_leaks(settings: Settings) -> Iterator[list[str]]:
    """Append every sandbox id the test creates; after the test none of them may leave a trace."""
    ids: list[str] = []
    yield ids
    problems = {sid: found for sid in ids if (found := leaks(settings, sid))}
    assert problems == {}
    assert mounts.mounts_under(settings.data_dir) == []
