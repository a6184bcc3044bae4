"""An established loopback TCP connection inside the sandbox survives snapshot + restore (fresh netns)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import branch, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROG = r"""
import socket, threading, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
def echo():
    conn, _ = srv.accept()
    while True:
        data = conn.recv(64)
        if not data:
            return
        conn.sendall(b"echo " + data)
threading.Thread(target=echo, daemon=True).start()
cli = socket.create_connection(srv.getsockname())
n = 0
while True:
    n += 1
    cli.sendall(str(n).encode())
    print(cli.recv(64).decode(), flush=True)
    time.sleep(0.02)
"""


async def test_loopback_tcp_connection_survives_restore(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str]
) -> None:
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)
    copy_ids = [f"fd-{unique_id}-t{i}" for i in range(2)]
    no_leaks += [f"fd-{unique_id}-tcp", *copy_ids]
    sb = await manager.create(
        SandboxSpec(
            id=f"fd-{unique_id}-tcp",
            lowers=[python_rootfs],
            args=["python3", "-c", PROG],
            limits=Limits(disk_mb=16, timeout_s=None),
        ),
        stdin_pipe=False,
    )
    copies: list[Sandbox] = []
    try:
        await sb.start()
        for _ in range(200):
            if sb.stdout().count(b"\n") >= 5:
                break
            await asyncio.sleep(0.02)
        assert b"echo 5" in sb.stdout(), sb.stderr()
        snap = await snapshot_sandbox(store, sb)
        copies = [r.sandbox for r in await branch(store, snap.id, copy_ids, manager=manager)]
        for c in copies:
            for _ in range(100):
                if c.stdout().count(b"\n") >= 5:
                    break
                await asyncio.sleep(0.05)
            lines = [ln for ln in c.stdout().decode().splitlines() if ln.startswith("echo ")]
            assert len(lines) >= 5, (c.stdout(), c.stderr())
            nums = [int(ln.split()[1]) for ln in lines]
            assert nums == list(range(nums[0], nums[0] + len(nums))) and nums[0] > 5
            assert c.status == "running"
    finally:
        for c in copies:
            await c.destroy()
        await asyncio.shield(sb.destroy())
