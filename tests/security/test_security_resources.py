"""Resource abuse under the platform's default limits: fork bomb, memory bomb, disk and /tmp fill.

Each attack must be stopped by its limit, reported in the result, and leave the host usable.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from security_helpers import Attacks, parse

from faasd.errors import PidsExhaustedError, ResourceLimitError
from faasd.runtime import Limits, SandboxManager

pytestmark = [pytest.mark.security]

DEFAULTS = Limits()


def host_is_fine() -> None:
    """The host can still fork, exec and allocate after the attack."""
    out = subprocess.run(["sh", "-c", "echo ok"], capture_output=True, check=True, timeout=30)
    assert out.stdout == b"ok\n"
    block = bytearray(64 << 20)
    block[::4096] = b"x" * len(block[::4096])
    del block


async def test_python_fork_bomb_contained_by_pids_limit(attacks: Attacks, manager: SandboxManager) -> None:
    code = (
        "import os, time, errno\n"
        "n, err = 0, None\n"
        "try:\n"
        "    while n < 10000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(120); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    err = errno.errorcode.get(e.errno)\n"
        "print('forked', n, err, flush=True)\n"
        "time.sleep(120)\n"
    )
    sb = await manager.create(attacks.spec("python3", "-c", code))
    try:
        await sb.start()
        for _ in range(400):
            if b"forked" in sb.stdout():
                break
            await _sleep(0.05)
        procs_in_cgroup = sb.cgroup_read("pids", "pids.current")
        status = await sb.wait(3)  # the sandbox is still killable: killed at the deadline
    finally:
        await sb.destroy()
    _, n, err = sb.stdout().split()[:3]
    assert err == b"EAGAIN" and int(n) < (DEFAULTS.pids or 0), sb.stdout()
    assert procs_in_cgroup is not None and int(procs_in_cgroup) <= (DEFAULTS.pids or 0)
    assert status.timed_out and status.exit_code == 137
    host_is_fine()


async def test_shell_fork_bomb_is_killed_and_reported(attacks: Attacks, manager: SandboxManager) -> None:
    res = await manager.run(attacks.spec("bash", "-c", ":(){ :|:& };:; sleep 60"), timeout_s=60)
    assert res.pids_exhausted and not res.timed_out  # ended when the limit was hit, not at the time-out
    with pytest.raises(PidsExhaustedError, match="pids limit"):
        res.raise_for_limits()
    host_is_fine()


async def test_memory_bomb_is_oom_killed_and_reported(attacks: Attacks, manager: SandboxManager) -> None:
    code = (
        "chunks = []\n"
        "while True:\n"
        "    b = bytearray(16 << 20); b[::4096] = b'x' * len(b[::4096]); chunks.append(b)\n"
        "    print(len(chunks) * 16, flush=True)\n"
    )
    res = await manager.run(attacks.spec("python3", "-c", code), timeout_s=60)
    assert res.oom_killed and res.exit_code == 137
    reached = int(res.stdout.split()[-1])
    assert reached <= (DEFAULTS.memory_mb or 0), f"allocated {reached} MiB with a {DEFAULTS.memory_mb} limit"
    with pytest.raises(ResourceLimitError, match="memory limit of 256 MiB exceeded"):
        res.raise_for_limits()
    host_is_fine()


async def test_memory_bomb_in_forked_children_is_contained(attacks: Attacks, manager: SandboxManager) -> None:
    code = (
        "import os, time\n"
        "for _ in range(8):\n"
        "    if os.fork() == 0:\n"
        "        b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30); os._exit(0)\n"
        "time.sleep(30)\n"
    )
    sb = await manager.create(attacks.spec("python3", "-c", code))
    try:
        await sb.start()
        status = await sb.wait(4)
        peak = sb.cgroup_read("memory", "memory.max_usage_in_bytes")
        kills = sb.oom_kills()
    finally:
        await sb.destroy()
    assert kills > 0, "8 x 96 MiB in a 256 MiB sandbox must trigger the OOM killer"
    assert peak is not None and int(peak) <= (DEFAULTS.memory_mb or 0) << 20
    assert status.exit_code in (0, 137)
    host_is_fine()


FILL = (
    "import errno, os\n"
    "path = {path!r}\n"
    "written, err = 0, None\n"
    "try:\n"
    "    with open(path, 'wb') as f:\n"
    "        while written < ({cap} << 20):\n"
    "            f.write(b'x' * (1 << 20)); f.flush(); written += 1 << 20\n"
    "        os.fsync(f.fileno())\n"
    "except OSError as e:\n"
    "    err = errno.errorcode.get(e.errno)\n"
    "st = os.statvfs(os.path.dirname(path))\n"
    "R['err'], R['written_mb'] = err, written >> 20\n"
    "R['fs_size_mb'] = st.f_blocks * st.f_frsize >> 20\n"
)


def root_free_mb() -> int:
    st = os.statvfs("/")
    return st.f_bavail * st.f_frsize >> 20


async def test_disk_fill_under_default_limits_is_contained(attacks: Attacks) -> None:
    """Whatever stops it, filling the root under the default limits never spills onto the host."""
    free_before = root_free_mb()
    res = await attacks.run(FILL.format(path="/fill.bin", cap=2048), timeout_s=120)
    free_after = root_free_mb()
    r = parse(res) if b"@@RESULT@@" in res.stdout else {}
    assert res.oom_killed or r.get("err") == "ENOSPC", (res, r)
    assert free_before - free_after < 128, "the host's root fs absorbed the writes"
    host_is_fine()


async def test_disk_fill_of_writable_layer_hits_enospc(attacks: Attacks) -> None:
    res = await attacks.run(FILL.format(path="/fill.bin", cap=2048), timeout_s=120)
    assert not res.oom_killed, "filling the writable layer OOM-killed the sandbox instead of ENOSPC"
    r = parse(res)
    assert res.exit_code == 0 and r["err"] == "ENOSPC", r
    assert r["written_mb"] <= (DEFAULTS.disk_mb or 0)


async def test_disk_fill_with_small_disk_limit_hits_enospc(attacks: Attacks) -> None:
    free_before = root_free_mb()
    r = await attacks.results(FILL.format(path="/fill.bin", cap=512), limits=Limits(disk_mb=64))
    free_after = root_free_mb()
    assert r["err"] == "ENOSPC" and r["written_mb"] <= 64, r
    assert free_before - free_after < 32, "the host's root fs absorbed the writes"


async def test_tmp_fill_hits_enospc(attacks: Attacks) -> None:
    r = await attacks.results(FILL.format(path="/tmp/fill.bin", cap=512))
    assert r["err"] == "ENOSPC", r
    assert r["written_mb"] <= (DEFAULTS.tmp_mb or 0) and r["fs_size_mb"] <= (DEFAULTS.tmp_mb or 0), r


async def test_dev_shm_fill_hits_enospc(attacks: Attacks) -> None:
    r = await attacks.results(FILL.format(path="/dev/shm/fill.bin", cap=512))
    assert r["err"] == "ENOSPC" and r["written_mb"] <= 64, r


async def test_inode_exhaustion_is_contained(attacks: Attacks) -> None:
    """Millions of empty files: stopped by ENOSPC (inode bound) or, failing that, the memory limit."""
    res = await attacks.run(
        "n, err = 0, None\n"
        "os.makedirs('/many', exist_ok=True)\n"
        "try:\n"
        "    while n < 3_000_000:\n"
        "        os.close(os.open(f'/many/{n}', os.O_CREAT | os.O_WRONLY)); n += 1\n"
        "except OSError as e:\n"
        "    err = errno.errorcode.get(e.errno)\n"
        "R['err'], R['files'] = err, n\n",
        timeout_s=180,
        limits=Limits(disk_mb=16),
    )
    if res.oom_killed:
        assert res.exit_code == 137  # empty tmpfs inodes are bounded only by the memory cgroup
    else:
        r = parse(res)
        assert r["err"] in ("ENOSPC", "EDQUOT"), r
    assert not res.timed_out
    host_is_fine()


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_open_file_limit_is_enforced(attacks: Attacks) -> None:
    r = await attacks.results(
        "import resource\n"
        "fds, err = [], None\n"
        "try:\n"
        "    while len(fds) < 100000:\n"
        "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e:\n"
        "    err = errno.errorcode.get(e.errno)\n"
        "R['err'], R['opened'] = err, len(fds)\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20)); R['raise'] = 'ok'\n"
        "except (OSError, ValueError) as e:\n"
        "    R['raise'] = errno.errorcode.get(getattr(e, 'errno', None) or 0, type(e).__name__)\n"
    )
    assert r["err"] == "EMFILE" and r["opened"] < DEFAULTS.nofile, r
    assert r["raise"] in ("EPERM", "EINVAL", "ValueError"), r  # no CAP_SYS_RESOURCE to lift the hard limit
