"""``Sandbox.exec(..., timeout=...)``: a timed-out exec leaves no process, zombie or stuck sandbox behind."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from faasd.runtime import SandboxManager, SandboxSpec, reaper

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _container_strays(init_pid: int, children_before: set[int]) -> list[str]:
    """Processes of the sandbox's pid namespace other than its init, plus zombies handed to us.

    A timed-out exec must leave neither its process nor its background children running, and a killed
    ``runc exec`` must not hand us (a subreaper) an unreaped zombie: one keeps the container's init from
    ever finishing when the sandbox is killed.
    """
    ns = _pid_ns(init_pid)
    assert ns is not None
    found = []
    ours = set(reaper._children())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init_pid:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
        nspid = fields.get("NSpid", "").split()
        zombie = fields.get("State", "").split()[:1] == ["Z"]
        if zombie:
            # killed background children are re-parented to the container's init (here a plain
            # `sleep`, which does not reap): they go with it. Only a zombie handed to us is a leak.
            if pid in ours and pid not in children_before and len(nspid) > 1:
                found.append(f"zombie {pid} handed to us, ns pids {nspid}")
        elif _pid_ns(pid) == ns:
            found.append(f"running {pid} {fields.get('Name', '').strip()} ns pids {nspid}")
    return found


@pytest.mark.parametrize(
    "cmd",
    [
        ["sleep", "60"],
        # the exec'd shell leaves a background grandchild: it is not the pid runc exec reports
        ["sh", "-c", "sleep 61 & sleep 62; wait"],
    ],
    ids=["plain", "with-grandchild"],
)
async def test_exec_timeout_leaves_nothing_and_destroy_succeeds(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None], cmd: list[str]
) -> None:
    sb = await manager.create(make_spec("sleep", "600"))
    await sb.start()
    assert sb.pid is not None
    before = set(reaper._children())  # e.g. not yet reaped inits of other tests' sandboxes
    result = await sb.exec(cmd, timeout=0.5)
    assert result.timed_out and result.exit_code == 137
    assert _container_strays(sb.pid, before) == []
    # the sandbox is still usable after a timed-out exec
    ok = await sb.exec(["sh", "-c", "echo alive"], timeout=30)
    assert ok.exit_code == 0 and ok.stdout == b"alive\n"
    await sb.destroy()  # kills the init; must not hang on an unreaped zombie of its pid namespace
    assert sb.status == "destroyed"
    no_leaks()
