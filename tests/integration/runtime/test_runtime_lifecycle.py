"""Pause/resume really freezes; cleanup on every failure path leaves nothing behind; crash reconciliation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import RuntimeFailure
from faasd.runtime import SandboxManager, SandboxSpec, network, userns
from faasd.runtime.models import UserNamespace
from faasd.runtime.sandbox import create as create_mod

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]
COUNTER = ("import time\ni = 0\nwhile True:\n    i += 1\n    open('/run/faasd-io/n.tmp', 'w').write(str(i))\n"
           "    __import__('os').replace('/run/faasd-io/n.tmp', '/run/faasd-io/n')\n    time.sleep(0.01)\n")


async def _advances(sb_io: Path, than: int) -> bool:
    for _ in range(250):
        if await _counter(sb_io) > than:
            return True
        await asyncio.sleep(0.02)
    return False


async def _counter(sb_io: Path) -> int:
    for _ in range(300):
        try:
            return int((sb_io / "n").read_text())
        except (FileNotFoundError, ValueError):
            await asyncio.sleep(0.02)
    raise AssertionError("counter never appeared")


async def test_pause_freezes_and_resume_continues(manager: SandboxManager, make_spec: Spec,
                                                  no_leaks: Callable[[], None]) -> None:
    sb = await manager.create(make_spec("python3", "-c", COUNTER))
    try:
        await sb.start()
        first = await _counter(sb.io_dir)
        assert await _advances(sb.io_dir, first)
        await sb.pause()
        assert sb.status == "paused" and (await sb.state())["status"] == "paused"
        frozen = await _counter(sb.io_dir)
        await asyncio.sleep(0.5)
        assert await _counter(sb.io_dir) == frozen
        await sb.resume()
        assert await _advances(sb.io_dir, frozen)
        await sb.pause()  # destroying a paused sandbox must work too
    finally:
        await sb.destroy()
    no_leaks()


async def test_runc_create_failure_is_cleaned_up(manager: SandboxManager, make_spec: Spec,
                                                 no_leaks: Callable[[], None]) -> None:
    with pytest.raises(RuntimeFailure, match="runc create failed") as exc:
        await manager.create(make_spec("/no/such/binary"))
    assert "no such file" in exc.value.message.lower()
    no_leaks()


async def test_exception_mid_create_is_cleaned_up(manager: SandboxManager, make_spec: Spec,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  no_leaks: Callable[[], None]) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("injected failure after overlay and netns were set up")

    monkeypatch.setattr(create_mod, "build_config", boom)
    with pytest.raises(RuntimeError, match="injected"):
        await manager.create(make_spec("true"))
    no_leaks()


async def test_cancel_mid_create_is_cleaned_up(manager: SandboxManager, make_spec: Spec,
                                               monkeypatch: pytest.MonkeyPatch,
                                               no_leaks: Callable[[], None]) -> None:
    real = network.acreate_netns
    reached = asyncio.Event()

    async def slow(sandbox_id: str) -> Path:
        path = await real(sandbox_id)
        reached.set()
        await asyncio.sleep(30)
        return path

    monkeypatch.setattr(network, "acreate_netns", slow)
    spec = make_spec("true")
    if manager._wants_userns(spec):  # the netns is made with the sandbox's user namespace, in a thread
        loop = asyncio.get_running_loop()
        real_ns = userns.pin_userns

        def slow_ns(sandbox_id: str, ns: UserNamespace) -> Path:
            path = real_ns(sandbox_id, ns)
            loop.call_soon_threadsafe(reached.set)
            time.sleep(1.0)
            return path

        monkeypatch.setattr(userns, "pin_userns", slow_ns)
    task = asyncio.ensure_future(manager.create(spec))
    await asyncio.wait_for(reached.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    no_leaks()


async def test_kill_9_of_container_then_destroy(manager: SandboxManager, make_spec: Spec,
                                                no_leaks: Callable[[], None]) -> None:
    sb = await manager.create(make_spec("sleep", "60"))
    await sb.start()
    assert sb.pid is not None
    os.kill(sb.pid, signal.SIGKILL)
    status = await sb.wait(10)
    assert status.exit_code == 137 and status.signal == 9 and not status.timed_out
    await sb.destroy()
    no_leaks()


async def test_cleanup_orphans_after_a_crashed_process(settings: Settings, python_rootfs: Path, sid: str,
                                                       manager: SandboxManager,
                                                       no_leaks: Callable[[], None]) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from faasd.config import Settings
        from faasd.runtime import SandboxManager, SandboxSpec, NetworkSpec
        async def main():
            s = Settings(data_dir=Path({str(settings.data_dir)!r}), run_dir=Path({str(settings.run_dir)!r}))
            m = SandboxManager(s)
            sb = await m.create(SandboxSpec(id={sid!r}, lowers=[Path({str(python_rootfs)!r})],
                                args=["sleep", "300"], network=NetworkSpec(mode="egress")))
            await sb.start()
            print("ready", flush=True)
            await asyncio.sleep(300)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert line.strip() == b"ready", proc.stderr.read() if proc.stderr else b""
    finally:
        proc.kill()  # the "crash": no destroy ran
        proc.wait()
    infos = {i.id: i for i in await manager.list()}
    assert sid in infos and not infos[sid].owned
    assert await manager.cleanup_orphans() == [sid]
    no_leaks()
    assert await manager.cleanup_orphans() == []
