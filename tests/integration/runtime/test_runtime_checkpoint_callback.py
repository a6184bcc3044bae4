"""A running sandbox dumped by CRIU directly: CRIU stops it itself and calls faasd back (its post-dump
action) to copy the sandbox's files while it is still stopped (``faasd.runtime.criu_dump``). Both ways of
calling back: CRIU's own handshake (faasd's patch 0007) and the action script any CRIU runs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.errors import RuntimeFailure
from faasd.runtime import Sandbox, SandboxManager, SandboxSpec, cgroups, criu_cli, criu_dump
from faasd.runtime import checkpoint as checkpoint_module
from faasd.runtime.checkpoint import checkpoint
from faasd.runtime.checkpointable import checkpoint_source
from faasd.runtime.restore import SnapshotDirs, restore
from fixtures.counter import count_above, read_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed"),
]

Spec = Callable[..., SandboxSpec]

# Counts in memory, makes one directory per count in its root filesystem (the overlay upper) and publishes
# the count as the counter fixture does. A directory, not a file: a file the checkpoint found open would be
# re-opened for writing by CRIU's restore, which copies it up into the copy's own upper as if made anew
# (1 run in ~10 failed that way). A copy whose files ran ahead of its memory dies on its next mkdir.
FILES = (
    "import os, time\nos.makedirs('/files', exist_ok=True)\ni = 0\nwhile True:\n    i += 1\n"
    "    os.mkdir('/files/%d' % i)\n"
    "    tmp = '/run/faasd-io/n.%d' % i\n    try:\n"
    "        os.symlink(str(i), tmp)\n        os.replace(tmp, '/run/faasd-io/n')\n    except OSError:\n"
    "        pass\n    time.sleep(0.002)\n"
)


@pytest.fixture(params=["native", "script"], autouse=True)
def handshake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``script``: the CRIU binary is taken for one without patch 0007 (the action script calls back)."""
    if request.param == "script":
        monkeypatch.setattr(criu_cli, "has_patch", lambda binary, marker: False)
    return str(request.param)


def _numbers(d: Path) -> list[int]:
    return sorted(int(p.name) for p in d.iterdir()) if d.is_dir() else []


def _upper(sb: Sandbox) -> Path:
    upper = checkpoint_source(sb).upper
    assert upper is not None
    return upper


async def test_files_and_memory_are_captured_at_the_same_instant(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]], tmp_path: Path
) -> None:
    sb = await manager.create(make_spec("python3", "-c", FILES), stdin_pipe=False)
    copy: Sandbox | None = None
    try:
        await sb.start()
        await count_above(sb.io_dir, 20)
        cp = await checkpoint(sb, tmp_path / "cp")
        assert cp.dumped_by == "criu"
        # CRIU stopped the tasks (faasd did not freeze them) and measured how long they stood still
        assert "criu_frozen" in cp.timings_ms
        assert 0 < cp.timings_ms["frozen"] < cp.timings_ms["total"]
        assert (await sb.state())["status"] == "running"
        files = _numbers(cp.upper / "files")
        assert files == list(range(1, len(files) + 1)) and len(files) >= 20
        dirs = SnapshotDirs(
            criu=cp.criu, config_json=cp.bundle / "config.json", lowers=[*sb.spec.lowers, cp.upper]
        )
        r = await restore(manager, dirs, sid + "-c", notify_agent=False)
        copy = r.sandbox
        await count_above(copy.io_dir, len(files) + 3)
        # the copy's memory held the count of the last file captured: its first new file is the next one
        assert _numbers(_upper(copy) / "files")[0] == len(files) + 1
    finally:
        if copy is not None:
            await copy.destroy()
        await sb.destroy()
    assert leaks_of(sid) == [] and leaks_of(sid + "-c") == []


async def _dump_fails_and_the_sandbox_runs_on(
    manager: SandboxManager, make_spec: Spec, tmp_path: Path, error: type[Exception], match: str
) -> None:
    sb = await manager.create(make_spec("python3", "-c", FILES), stdin_pipe=False)
    try:
        await sb.start()
        await read_count(sb.io_dir)
        with pytest.raises(error, match=match):
            await checkpoint(sb, tmp_path / "cp")
        assert not (tmp_path / "cp").exists()
        assert not list(sb.bundle.glob("criu-dump-*"))  # CRIU's work dir went too
        assert (await sb.state())["status"] == "running"
        freezer = cgroups.controller_dir(sb.id, "freezer")
        assert freezer is not None and (freezer / "freezer.state").read_text().strip() == "THAWED"
        await count_above(sb.io_dir, await read_count(sb.io_dir) + 3)  # CRIU resumed it
    finally:
        await sb.destroy()


async def test_a_failed_copy_fails_the_dump_and_the_sandbox_runs_on(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_copy(upper: Path, dest: Path) -> None:
        raise RuntimeError("copy broke")

    monkeypatch.setattr(checkpoint_module, "copy_upper", broken_copy)
    await _dump_fails_and_the_sandbox_runs_on(manager, make_spec, tmp_path, RuntimeError, "copy broke")
    assert leaks_of(sid) == []


async def test_faasd_gone_without_an_answer_fails_the_dump_and_the_sandbox_runs_on(
    manager: SandboxManager, make_spec: Spec, sid: str, leaks_of: Callable[[str], list[str]],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """faasd's end of ``go`` closes without an answer (as when the daemon dies mid-dump): CRIU reads end
    of file and fails the dump itself ("exited with status", not faasd's time limit, "did not finish"),
    and the tasks are resumed."""

    def gone(hook: criu_dump._PostDump, ok: bool) -> None:
        os.close(hook.go_fd)
        hook.go_fd = -1  # closing it again is a no-op, never another descriptor

    monkeypatch.setattr(criu_dump._PostDump, "answer", gone)
    await _dump_fails_and_the_sandbox_runs_on(
        manager, make_spec, tmp_path, RuntimeFailure, "criu dump exited with status"
    )
    assert leaks_of(sid) == []
