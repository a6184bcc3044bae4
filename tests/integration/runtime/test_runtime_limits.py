"""Resource limits enforced by the kernel: memory (OOM), pids, cpu quota, wall-clock timeout, disk, /tmp."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from faasd.errors import ResourceLimitError
from faasd.runtime import Limits, SandboxManager, SandboxSpec, raise_for_limits

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]


async def test_memory_limit_oom_is_reported(manager: SandboxManager, make_spec: Spec,
                                            no_leaks: Callable[[], None]) -> None:
    code = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    spec = make_spec("python3", "-c", code, limits=Limits(memory_mb=48))
    res = await manager.run(spec, timeout_s=30)
    assert res.oom_killed
    assert res.exit_code == 137
    assert b"survived" not in res.stdout
    with pytest.raises(ResourceLimitError, match="memory limit of 48 MiB exceeded"):
        res.raise_for_limits()
    with pytest.raises(ResourceLimitError, match="memory limit of 48 MiB exceeded"):
        raise_for_limits(res, spec.limits)
    no_leaks()


async def test_memory_below_limit_is_not_oom(manager: SandboxManager, make_spec: Spec) -> None:
    res = await manager.run(make_spec("python3", "-c", "b = bytearray(8 << 20); print(len(b))",
                                      limits=Limits(memory_mb=64)), timeout_s=30)
    assert res.exit_code == 0 and not res.oom_killed


async def test_pids_limit_contains_fork_bomb(manager: SandboxManager, make_spec: Spec,
                                             no_leaks: Callable[[], None]) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 1000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('fork failed after', n, e.errno, flush=True)\n"
        "time.sleep(60)\n"
    )
    sb = await manager.create(make_spec("python3", "-c", code, limits=Limits(pids=16)))
    await sb.start()
    for _ in range(600):  # until the bomb hit the limit (no timing assumption)
        if b"fork failed" in sb.stdout():
            break
        await asyncio.sleep(0.05)
    await sb.kill()  # the container stays killable at its pids limit
    status = await sb.wait(20)
    assert status.exit_code == 137
    out = sb.stdout().decode()
    assert "fork failed after" in out
    assert int(out.split()[3]) < 16
    assert int(out.split()[4]) == 11  # EAGAIN
    await sb.destroy()
    no_leaks()


async def test_shell_fork_bomb_is_killed_as_pids_exhausted(manager: SandboxManager, make_spec: Spec,
                                                           no_leaks: Callable[[], None]) -> None:
    res = await manager.run(make_spec("sh", "-c", "b() { b | b & }; b; sleep 30", limits=Limits(pids=32)),
                            timeout_s=30)
    assert res.pids_exhausted and not res.timed_out
    no_leaks()


async def test_cpu_quota_configured_and_usage_bounded(manager: SandboxManager, make_spec: Spec) -> None:
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n"
    sb = await manager.create(make_spec("python3", "-c", spin, limits=Limits(cpu_cores=0.25, cpu_shares=256)))
    try:
        assert sb.cgroup_read("cpu", "cpu.cfs_quota_us") == "25000\n"
        assert sb.cgroup_read("cpu", "cpu.cfs_period_us") == "100000\n"
        assert sb.cgroup_read("cpu", "cpu.shares") == "256\n"
        t0 = time.monotonic()
        await sb.start()
        status = await sb.wait(30)
        wall = time.monotonic() - t0
        assert status.exit_code == 0
        usage_s = int(sb.cgroup_read("cpuacct", "cpuacct.usage") or "0") / 1e9
        # a spinning process under a 0.25-core quota gets at most ~25% of the wall time (generous margin)
        assert 0 < usage_s < 0.5 * wall
    finally:
        await sb.destroy()


async def test_memory_and_pids_configured(manager: SandboxManager, make_spec: Spec) -> None:
    sb = await manager.create(make_spec("true", limits=Limits(memory_mb=64, pids=42)))
    try:
        assert sb.cgroup_read("memory", "memory.limit_in_bytes") == f"{64 << 20}\n"
        assert sb.cgroup_read("memory", "memory.memsw.limit_in_bytes") == f"{64 << 20}\n"
        assert sb.cgroup_read("pids", "pids.max") == "42\n"
    finally:
        await sb.destroy()


async def test_wall_clock_timeout_kills(manager: SandboxManager, make_spec: Spec,
                                        no_leaks: Callable[[], None]) -> None:
    t0 = time.monotonic()
    res = await manager.run(make_spec("sleep", "60"), timeout_s=1.0)
    assert res.timed_out and res.exit_code == 137 and res.signal == 9
    assert time.monotonic() - t0 < 30  # killed, not waited out
    with pytest.raises(ResourceLimitError, match="timeout of 1 s"):
        res.raise_for_limits()
    no_leaks()


async def test_disk_limit_of_upper(manager: SandboxManager, make_spec: Spec,
                                   no_leaks: Callable[[], None]) -> None:
    code = (
        "import errno\n"
        "try:\n"
        "    with open('/big', 'wb') as f:\n"
        "        for _ in range(64): f.write(b'x' * (1 << 20)); f.flush()\n"
        "    print('wrote all')\n"
        "except OSError as e:\n"
        "    print('ENOSPC' if e.errno == errno.ENOSPC else e)\n"
    )
    res = await manager.run(make_spec("python3", "-c", code, limits=Limits(disk_mb=16, memory_mb=256)),
                            timeout_s=30)
    assert res.stdout.strip() == b"ENOSPC", res
    no_leaks()


async def test_tmp_is_size_limited(manager: SandboxManager, make_spec: Spec) -> None:
    code = (
        "import errno\n"
        "try:\n"
        "    open('/tmp/f', 'wb').write(b'x' * (32 << 20)); print('wrote all')\n"
        "except OSError as e:\n"
        "    print('ENOSPC' if e.errno == errno.ENOSPC else e)\n"
    )
    res = await manager.run(make_spec("python3", "-c", code, limits=Limits(tmp_mb=8)), timeout_s=30)
    assert res.stdout.strip() == b"ENOSPC", res


async def test_nofile_rlimit(manager: SandboxManager, make_spec: Spec) -> None:
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"
    res = await manager.run(make_spec("python3", "-c", code, limits=Limits(nofile=256)), timeout_s=30)
    assert res.stdout.strip() == b"(256, 256)"


async def test_runc_events_report_oom(manager: SandboxManager, make_spec: Spec) -> None:
    code = "import time; time.sleep(0.5); b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"
    sb = await manager.create(make_spec("python3", "-c", code, limits=Limits(memory_mb=48)))
    events: list[str] = []

    async def collect() -> None:
        async for ev in sb.runtime.events(sb.id, interval_s=60):
            events.append(str(ev.get("type")))

    task = asyncio.ensure_future(collect())
    try:
        await sb.start()
        status = await sb.wait(30)
        assert status.oom_killed and status.exit_code == 137
        for _ in range(100):
            if "oom" in events:
                break
            await asyncio.sleep(0.1)
        assert "oom" in events
    finally:
        task.cancel()
        await sb.destroy()


async def test_loop_disk_backend_is_real_disk(manager: SandboxManager, make_spec: Spec,
                                              no_leaks: Callable[[], None]) -> None:
    # more file data than memory: the loop-backed upper gives ENOSPC, not an OOM kill
    code = (
        "import errno\n"
        "try:\n"
        "    with open('/big', 'wb') as f:\n"
        "        for _ in range(200): f.write(b'x' * (1 << 20)); f.flush()\n"
        "    print('wrote all')\n"
        "except OSError as e:\n"
        "    print('ENOSPC' if e.errno == errno.ENOSPC else e)\n"
    )
    limits = Limits(memory_mb=64, disk_mb=128, disk_backend="loop")
    res = await manager.run(make_spec("python3", "-c", code, limits=limits), timeout_s=60)
    assert not res.oom_killed, res
    assert res.stdout.strip() == b"ENOSPC", res
    no_leaks()
