"""User namespaces: root in a sandbox is an unprivileged host id range of its own, nothing more.

Every test asks for ``SandboxSpec.userns=True`` so it runs whatever the daemon default (FAASD_USERNS) is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from faasd.runtime import BindMount, Limits, SandboxManager, SandboxSpec, userns
from faasd.runtime.models import UserNamespace
from faasd.runtime.sandbox import Sandbox, registry
from faasd.testing.leaks import find_leaks, sandbox_leaks


def _spec(sid: str, rootfs: Path, *args: str, **kw: object) -> SandboxSpec:
    return SandboxSpec(id=sid, lowers=[rootfs], args=list(args), userns=True, **kw)  # type: ignore[arg-type]


def _host_ids(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(ln for ln in status if ln.startswith("Uid:")).split()[1]
    gid = next(ln for ln in status if ln.startswith("Gid:")).split()[1]
    return int(uid), int(gid)


async def test_uid_map_shows_an_unprivileged_range_and_host_sees_no_root(
    manager: SandboxManager, python_rootfs: Path, unique_id: str, settings: Settings
) -> None:
    sid = f"fd-{unique_id}"
    sb = await manager.create(_spec(sid, python_rootfs, "sleep", "60"))
    try:
        await sb.start()
        ns = sb.userns
        assert ns is not None and ns.host_id >= userns.FIRST_HOST_ID and ns.size == 65536
        assert ns.host_id + ns.size <= 1 << 31
        assert UserNamespace.from_config(json.loads(sb.config_path.read_text())) == ns
        r = await sb.exec(["cat", "/proc/self/uid_map", "/proc/self/gid_map"])
        assert r.exit_code == 0, r.stderr
        lines = [ln.split() for ln in r.stdout.decode().splitlines()]
        assert lines == [["0", str(ns.host_id), "65536"]] * 2
        r = await sb.exec(["id", "-u"])
        assert r.stdout.strip() == b"0"  # root inside ...
        assert sb.pid is not None
        assert _host_ids(sb.pid) == (ns.host_id, ns.host_id)  # ... is host id host_id, not 0
    finally:
        await sb.destroy()
    assert userns.allocated(sid) is None
    assert sandbox_leaks(settings, sid) == []


async def test_two_sandboxes_get_disjoint_ranges(
    manager: SandboxManager, python_rootfs: Path, unique_id: str, settings: Settings
) -> None:
    ids = [f"fd-{unique_id}-a", f"fd-{unique_id}-b"]
    sbs = [await manager.create(_spec(i, python_rootfs, "true")) for i in ids]
    try:
        a, b = (sb.userns for sb in sbs)
        assert a is not None and b is not None
        assert a.host_id + a.size <= b.host_id or b.host_id + b.size <= a.host_id
        assert set(userns.holders()) >= set(ids)
    finally:
        for sb in sbs:
            await sb.destroy()
    assert find_leaks(settings, ids) == {}


async def test_writes_are_unshifted_in_the_upper_and_shifted_in_the_host_view(
    manager: SandboxManager, python_rootfs: Path, unique_id: str
) -> None:
    sid = f"fd-{unique_id}"
    script = "echo a > /owned-by-root && echo b > /owned-by-1000 && chown 1000:1001 /owned-by-1000"
    sb = await manager.create(_spec(sid, python_rootfs, "sh", "-c", script))
    try:
        await sb.start()
        status = await sb.wait(20)
        assert status.exit_code == 0, sb.stderr()
        assert sb.rootfs is not None and sb.rootfs.upper is not None and sb.userns is not None
        upper, merged, host_id = sb.rootfs.upper, sb.rootfs.path, sb.userns.host_id
        # the upper (what snapshots capture) holds the ids as the sandbox sees them
        assert (os.stat(upper / "owned-by-root").st_uid, os.stat(upper / "owned-by-root").st_gid) == (0, 0)
        st = os.stat(upper / "owned-by-1000")
        assert (st.st_uid, st.st_gid) == (1000, 1001)
        # the host's view of the root is shifted into the range: nothing there is owned by host root
        st = os.stat(merged / "owned-by-1000")
        assert (st.st_uid, st.st_gid) == (host_id + 1000, host_id + 1001)
        assert os.stat(merged / "etc/passwd").st_uid == host_id
        # the shared image layer itself is untouched
        assert os.stat(python_rootfs / "etc/passwd").st_uid == 0
    finally:
        await sb.destroy()


async def test_root_owned_bind_sources_read_as_root_inside_but_stay_root_on_host(
    manager: SandboxManager, python_rootfs: Path, unique_id: str, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "token").write_text("s3cret")
    (secrets / "token").chmod(0o400)
    secrets.chmod(0o500)
    sid = f"fd-{unique_id}"
    spec = _spec(sid, python_rootfs, "sh", "-c", "cat /run/secrets/token; stat -c %u /run/secrets/token; "
                 "touch /run/secrets/x 2>&1; echo rc=$?",
                 mounts=[BindMount(source=secrets, target="/run/secrets", readonly=True)])
    result = await manager.run(spec, timeout_s=20)
    out = result.stdout.decode()
    assert out.startswith("s3cret0\n"), (out, result.stderr)
    assert "rc=1" in out  # read-only
    st = os.stat(secrets / "token")
    assert (st.st_uid, st.st_gid) == (0, 0)  # nothing was chowned on the host
    assert not (secrets / "x").exists()


async def test_host_root_files_outside_the_range_are_not_root_files_inside(
    manager: SandboxManager, python_rootfs: Path, unique_id: str
) -> None:
    # /sys files belong to the host's root, which is not mapped into the sandbox: they show as nobody
    script = "ls -ln /sys/kernel | head -2 | tail -1"
    result = await manager.run(_spec(f"fd-{unique_id}", python_rootfs, "sh", "-c", script), timeout_s=20)
    out = result.stdout.decode()
    assert result.exit_code == 0, result.stderr
    # the owner column shows the overflow id: host root is not mapped into the sandbox
    assert " 65534 " in out, out


async def test_limits_are_still_enforced_under_userns(
    manager: SandboxManager, python_rootfs: Path, unique_id: str
) -> None:
    oom = await manager.run(
        _spec(f"fd-{unique_id}-m", python_rootfs, "python3", "-c", "b = bytearray(200 * 1024 * 1024)",
              limits=Limits(memory_mb=48)),
        timeout_s=30,
    )
    assert oom.oom_killed
    bomb = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
        "            time.sleep(30)\n        n += 1\nexcept OSError:\n    print('capped', n)\n"
    )
    r = await manager.run(
        _spec(f"fd-{unique_id}-p", python_rootfs, "python3", "-c", bomb, limits=Limits(pids=24)), timeout_s=30
    )
    # either the bomb saw fork() fail first, or the pids watch ended the sandbox first: both mean the cap held
    if b"capped" in r.stdout:
        assert int(r.stdout.split()[1]) < 24
    else:
        assert r.pids_exhausted, (r.exit_code, r.stderr)


async def test_range_and_pins_are_released_by_cleanup_orphans_after_a_crash(
    settings: Settings, python_rootfs: Path, unique_id: str
) -> None:
    sid = f"fd-{unique_id}"
    crashed = SandboxManager(settings)
    sb = await crashed.create(_spec(sid, python_rootfs, "sleep", "60"))
    await sb.start()
    ns = sb.userns
    assert ns is not None and userns.allocated(sid) == ns
    assert userns.userns_path(sid).exists()
    # the process "crashes": its manager forgets the sandbox without tearing anything down
    for t in sb._transports:
        t.close()
    if sb._waiter is not None:
        sb._waiter.cancel()
    crashed._forget(sb)
    assert registry.LIVE.get((str(settings.run_dir), sid)) is None
    fresh = SandboxManager(settings)
    cleaned = await fresh.cleanup_orphans()
    assert sid in cleaned
    assert userns.allocated(sid) is None
    assert sandbox_leaks(settings, sid) == []


def test_allocator_never_hands_out_a_range_twice(unique_id: str) -> None:
    ids = [f"fd-{unique_id}-{i}" for i in range(20)]
    try:
        got = [userns.allocate(i) for i in ids]
        assert userns.allocate(ids[0]) == got[0]  # idempotent per sandbox
        starts = sorted(r.host_id for r in got)
        assert all(b - a >= 65536 for a, b in itertools.pairwise(starts))
        assert all(r.host_id >= userns.FIRST_HOST_ID and r.host_id + r.size <= 1 << 31 for r in got)
    finally:
        for i in ids:
            userns.release(i)
    assert all(userns.allocated(i) is None for i in ids)


@pytest.mark.parametrize("mode", ["none", "loopback-proxy", "egress"])
async def test_network_modes_and_exec_work_under_userns(
    manager: SandboxManager, python_rootfs: Path, unique_id: str, settings: Settings, mode: str
) -> None:
    from faasd.runtime import NetworkSpec

    sid = f"fd-{unique_id}"
    server = "import socket\ns = socket.socket(); s.bind(('127.0.0.1', 8080)); s.listen()\n" \
        "c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
    sb = await manager.create(_spec(sid, python_rootfs, "python3", "-c", server,
                                    network=NetworkSpec(mode=mode)))  # type: ignore[arg-type]
    try:
        await sb.start()
        for _ in range(100):
            r = await sb.exec(["sh", "-c", "cat /proc/net/tcp | grep -c ':1F90 '"])
            if r.stdout.strip() not in (b"", b"0"):
                break
        # sysfs is the sandbox's own (its netns belongs to its user namespace): only its interfaces
        r = await sb.exec(["ls", "/sys/class/net"])
        names = set(r.stdout.decode().split())
        assert "lo" in names and ("eth0" in names) == (mode == "egress"), (r.stdout, r.stderr)
        # the host reaches a server inside through setns into the netns only
        reader, writer = await sb.open_connection(8080)
        assert await reader.read() == b"hello"
        writer.close()
    finally:
        await sb.destroy()
    assert sandbox_leaks(settings, sid) == []


COUNTER = (
    "import os, time\ni = 0\nopen('/tmp/mine', 'w').write('x')\nwhile True:\n    i += 1\n"
    "    open('/run/faasd-io/n.tmp', 'w').write(str(i))\n"
    "    os.replace('/run/faasd-io/n.tmp', '/run/faasd-io/n')\n"
    "    time.sleep(0.01)\n"
)


async def _count(io_dir: Path) -> int:
    for _ in range(500):
        try:
            return int((io_dir / "n").read_text())
        except (OSError, ValueError):
            await asyncio.sleep(0.01)
    raise AssertionError("the counter never appeared")


async def test_restore_runs_in_a_new_disjoint_range(
    manager: SandboxManager, python_rootfs: Path, unique_id: str, settings: Settings, tmp_path: Path
) -> None:
    sid, new_id = f"fd-{unique_id}", f"fd-{unique_id}-r"
    sb = await manager.create(_spec(sid, python_rootfs, "python3", "-c", COUNTER), stdin_pipe=False)
    try:
        await sb.start()
        before = await _count(sb.io_dir)
        old = sb.userns
        assert old is not None
        image = tmp_path / "criu"
        await sb.runtime.checkpoint(sb.id, image, work_path=tmp_path / "work", leave_running=True)
        dumped = json.loads(sb.config_path.read_text())
        old_bundle = str(sb.bundle)

        def rewrite(new: Sandbox) -> dict[str, Any]:
            text = json.dumps(dumped).replace(old_bundle, "@@B@@").replace(sid, new.id)
            return dict(json.loads(text.replace("@@B@@", str(new.bundle))))

        spec = _spec(new_id, python_rootfs, "python3", "-c", COUNTER)
        restored = await manager.restore(spec, image, rewrite)
        try:
            ns = restored.userns
            assert ns is not None and ns != old  # its own range, while the original still runs
            assert ns.host_id + ns.size <= old.host_id or old.host_id + old.size <= ns.host_id
            assert UserNamespace.from_config(json.loads(restored.config_path.read_text())) == ns
            r = await restored.exec(["sh", "-c", "cat /proc/self/uid_map; stat -c %u /tmp/mine"])
            assert r.exit_code == 0, r.stderr
            assert r.stdout.split() == [b"0", str(ns.host_id).encode(), b"65536", b"0"]
            assert restored.pid is not None and _host_ids(restored.pid) == (ns.host_id, ns.host_id)
            after = await _count(restored.io_dir)
            assert after >= before
            for _ in range(300):
                if await _count(restored.io_dir) > after:
                    break
                await asyncio.sleep(0.01)
            assert await _count(restored.io_dir) > after  # the restored process keeps running
        finally:
            await restored.destroy()
    finally:
        await sb.destroy()
    assert find_leaks(settings, [sid, new_id]) == {}
    assert userns.allocated(new_id) is None
