"""Isolation from inside a real sandbox: seccomp, capabilities, read-only/masked paths, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from faasd.runtime import SandboxManager, SandboxSpec
from faasd.runtime.spec import DEFAULT_CAPS

pytestmark = [pytest.mark.integration, pytest.mark.security]

Spec = Callable[..., SandboxSpec]

CAP_BITS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6,
    "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31,
}

SYSCALLS = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def err(rc):
    return 'ok' if rc == 0 else os.strerror(ctypes.get_errno())
print('mount', err(libc.mount(b'none', b'/mnt', b'tmpfs', 0, None)))
print('unshare_user', err(libc.unshare(0x10000000)))
print('unshare_net', err(libc.unshare(0x40000000)))
print('ptrace', err(libc.ptrace(0, 0, None, None)))
print('keyctl', err(libc.syscall(250, 0, 0, 0, 0)))
print('bpf', err(libc.syscall(321, 0, 0, 0)))
print('mknod', err(libc.mknod(b'/tmp/null2', 0o020666, os.makedev(1, 3))))
pid = os.fork()
if pid == 0:
    os._exit(5)
print('fork', os.waitpid(pid, 0)[1] >> 8)
print('seccomp', [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0])
"""


async def test_seccomp_blocks_dangerous_syscalls(manager: SandboxManager, make_spec: Spec) -> None:
    res = await manager.run(make_spec("python3", "-c", SYSCALLS), timeout_s=30)
    assert res.exit_code == 0, res.stderr
    got = dict(line.split(" ", 1) for line in res.stdout.decode().splitlines())
    # unshare(CLONE_NEWUSER) and ptrace(TRACEME) need no capability: EPERM here is seccomp's doing
    for name in ("mount", "unshare_user", "unshare_net", "ptrace", "keyctl", "bpf", "mknod"):
        assert got[name] == "Operation not permitted", (name, got)
    assert got["fork"] == "5"  # fork/wait (the agent's zygote) still work
    assert got["seccomp"] == "2"


def _caps(text: str, field: str) -> int:
    line = next(ln for ln in text.splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1], 16)


async def test_root_capabilities_reduced(manager: SandboxManager, make_spec: Spec) -> None:
    res = await manager.run(make_spec("cat", "/proc/self/status"), timeout_s=30)
    eff, bnd = _caps(res.stdout.decode(), "CapEff"), _caps(res.stdout.decode(), "CapBnd")
    expected = sum(1 << CAP_BITS[c] for c in DEFAULT_CAPS)
    assert eff == expected and bnd == expected
    assert not eff & (1 << CAP_BITS["CAP_SYS_ADMIN"])
    assert not eff & (1 << CAP_BITS["CAP_NET_RAW"])
    assert "NoNewPrivs:\t1" in res.stdout.decode()


async def test_non_root_user_has_no_capabilities(manager: SandboxManager, make_spec: Spec) -> None:
    res = await manager.run(make_spec("cat", "/proc/self/status", user="nobody"), timeout_s=30)
    text = res.stdout.decode()
    assert _caps(text, "CapEff") == 0 and _caps(text, "CapBnd") == 0 and _caps(text, "CapPrm") == 0
    assert "Uid:\t65534" in text


async def test_read_only_and_masked_paths(manager: SandboxManager, make_spec: Spec) -> None:
    script = (
        "import os\n"
        "for p in ['/proc/sys/kernel/hostname', '/sys/kernel/uevent_helper', '/proc/sysrq-trigger']:\n"
        "    try:\n"
        "        open(p, 'w').write('x'); print(p, 'writable')\n"
        "    except OSError as e:\n"
        "        print(p, e.strerror)\n"
        "for p in ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug']:\n"
        "    if os.path.exists(p): print('masked', p, len(open(p, 'rb').read(16)))\n"
        "print('root-writable', os.access('/etc', os.W_OK))\n"
    )
    res = await manager.run(make_spec("python3", "-c", script), timeout_s=30)
    out = res.stdout.decode()
    assert "writable" not in out.replace("root-writable", "")
    assert "/proc/sys/kernel/hostname Read-only file system" in out
    masked = [ln for ln in out.splitlines() if ln.startswith("masked ")]
    assert masked and all(ln.endswith(" 0") for ln in masked), out  # bind-mounted /dev/null
    assert "root-writable True" in out  # writable overlay root (bounded by disk_mb)


async def test_readonly_rootfs_option(manager: SandboxManager, make_spec: Spec) -> None:
    script = ("import os\ntry:\n    open('/x', 'w')\nexcept OSError as e: print(e.strerror)\n"
              "open('/tmp/ok','w')\n")
    res = await manager.run(make_spec("python3", "-c", script, readonly_rootfs=True), timeout_s=30)
    assert res.stdout.strip() == b"Read-only file system" and res.exit_code == 0


async def test_no_network_only_loopback(manager: SandboxManager, make_spec: Spec) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        script = (
            "import socket\n"
            "print(sorted(n for _, n in socket.if_nameindex()))\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"print(s.connect_ex(('127.0.0.1', {port})))\n"
        )
        res = await manager.run(make_spec("python3", "-c", script), timeout_s=30)
        lines = res.stdout.decode().splitlines()
        assert lines[0] == "['lo']"
        assert int(lines[1]) != 0  # the host's listener is not reachable from the sandbox's loopback
    finally:
        server.close()
        await server.wait_closed()
