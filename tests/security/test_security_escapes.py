"""Escape attempts run inside real runc sandboxes under the default limits; each must be contained.

Every test runs a small attack program with ``SandboxManager.run`` and asserts the kernel refused it
(errno names are checked, not just "something failed"), then checks the effect from the host side
where there is one. Numbers are x86_64 syscall numbers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from security_helpers import Attacks

from faasd.config import Settings
from faasd.errors import FaasdError
from faasd.runtime import BindMount, Limits, SandboxManager
from faasd.runtime.spec import DEFAULT_CAPS

pytestmark = [pytest.mark.security]

DENIED = {"EPERM", "EACCES", "EROFS"}

# write without O_CREAT: on the /dev tmpfs, open(p, "w") would just create a regular file
WRITE_HELPER = (
    "def w(p, v):\n"
    "    def f():\n"
    "        fd = os.open(p, os.O_WRONLY)\n"
    "        try: os.write(fd, v.encode())\n"
    "        finally: os.close(fd)\n"
    "    return io(f)\n"
)


def assert_denied(r: dict[str, object], *keys: str, allowed: set[str] = DENIED) -> None:
    bad = {k: r[k] for k in keys if r[k] not in allowed}
    assert not bad, f"not contained: {bad} (all results: {r})"


# ----------------------------------------------------------------------------- mounts & namespaces
async def test_mount_tmpfs_proc_bind_and_remount_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "os.makedirs('/mnt/x', exist_ok=True)\n"
        "R['tmpfs'] = call(libc.mount, b'none', b'/mnt/x', b'tmpfs', 0, None)\n"
        "R['proc'] = call(libc.mount, b'proc', b'/mnt/x', b'proc', 0, None)\n"
        "R['bind'] = call(libc.mount, b'/', b'/mnt/x', None, 4096, None)\n"  # MS_BIND
        "R['remount_sys_rw'] = call(libc.mount, None, b'/sys', None, 32, None)\n"  # MS_REMOUNT
        "R['cgroup'] = call(libc.mount, b'cgroup', b'/mnt/x', b'cgroup', 0, b'memory')\n"
        "R['umount_proc_mask'] = call(libc.umount2, b'/proc/kcore', 2)\n"  # MNT_DETACH
        "R['fsopen'] = sys_(430, b'tmpfs', 0)\n"
        "R['open_tree'] = sys_(428, -100, b'/', 1)\n"
        "R['mounted'] = os.path.ismount('/mnt/x')\n"
    )
    assert_denied(
        r, "tmpfs", "proc", "bind", "remount_sys_rw", "cgroup", "umount_proc_mask", "fsopen", "open_tree"
    )
    assert r["mounted"] is False


async def test_unshare_user_and_mount_namespaces_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "R['user_ns'] = call(libc.unshare, 0x10000000)\n"
        "R['user_and_mnt'] = call(libc.unshare, 0x10000000 | 0x00020000)\n"
        "R['mnt'] = call(libc.unshare, 0x00020000)\n"
        "R['net'] = call(libc.unshare, 0x40000000)\n"
        "R['pid'] = call(libc.unshare, 0x20000000)\n"
        "fd = os.open('/proc/1/ns/mnt', os.O_RDONLY)\n"
        "R['setns_init'] = call(libc.setns, fd, 0)\n"
        "R['clone3'] = sys_(435, None, 0)\n"
        "import subprocess\n"
        "p = subprocess.run(['unshare', '-Ur', 'id'], capture_output=True)\n"
        "R['unshare_cli'] = p.returncode\n"
        "R['own_userns'] = os.readlink('/proc/self/ns/user') == os.readlink('/proc/1/ns/user')\n"
    )
    assert_denied(r, "user_ns", "user_and_mnt", "mnt", "net", "pid", "setns_init")
    assert r["clone3"] == "ENOSYS"  # so libc falls back to the filterable clone
    assert r["unshare_cli"] != 0
    assert r["own_userns"] is True


async def test_ptrace_pid1_and_sibling_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "import time, signal\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(30); os._exit(0)\n"
        "PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206\n"
        "R['attach_sibling'] = sys_(101, PTRACE_ATTACH, child, 0, 0)\n"
        "R['seize_sibling'] = sys_(101, PTRACE_SEIZE, child, 0, 0)\n"
        "R['traceme'] = sys_(101, 0, 0, 0, 0)\n"
        "buf = ctypes.create_string_buffer(8)\n"
        "class IOV(ctypes.Structure): _fields_ = [('b', ctypes.c_void_p), ('n', ctypes.c_size_t)]\n"
        "l = IOV(ctypes.addressof(buf), 8); rm = IOV(0x400000, 8)\n"
        "R['process_vm_readv'] = sys_(310, child, ctypes.byref(l), 1, ctypes.byref(rm), 1, 0)\n"
        "R['pidfd_getfd'] = sys_(438, 0, 0, 0)\n"
        "r, w = os.pipe()\n"
        "gc = os.fork()\n"
        "if gc == 0:\n"
        "    os.write(w, str(sys_(101, PTRACE_ATTACH, 1, 0, 0)).encode()); os._exit(0)\n"
        "os.waitpid(gc, 0)\n"
        "R['attach_pid1'] = os.read(r, 100).decode()\n"
        "os.kill(child, signal.SIGKILL); os.waitpid(child, 0)\n"
    )
    assert_denied(r, "attach_sibling", "seize_sibling", "traceme", "process_vm_readv", "attach_pid1")
    assert r["pidfd_getfd"] in DENIED | {"EBADF"}


async def test_raw_and_packet_sockets_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "R['packet_raw'] = io(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)))\n"
        "P = socket.AF_PACKET\n"
        "R['packet_dgram'] = io(lambda: socket.socket(P, socket.SOCK_DGRAM, socket.htons(3)))\n"
        "R['inet_raw'] = io(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))\n"
        "R['inet6_raw'] = io(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW))\n"
    )
    assert_denied(r, "packet_raw", "packet_dgram", "inet_raw", "inet6_raw")


# ----------------------------------------------------------------------------- /proc and /sys
async def test_proc_sys_writes_fail_and_host_unchanged(attacks: Attacks) -> None:
    watched = ["kernel/hostname", "kernel/core_pattern", "kernel/modprobe", "vm/overcommit_memory"]
    watched = [p for p in watched if Path("/proc/sys", p).exists()]  # modprobe: only with module support
    before = {p: Path("/proc/sys", p).read_text() for p in watched}
    r = await attacks.results(
        WRITE_HELPER + "R['hostname'] = w('/proc/sys/kernel/hostname', 'pwned')\n"
        "R['core_pattern'] = w('/proc/sys/kernel/core_pattern', '|/tmp/x')\n"
        "R['modprobe'] = w('/proc/sys/kernel/modprobe', '/tmp/x')\n"
        "R['drop_caches'] = w('/proc/sys/vm/drop_caches', '3')\n"
        "R['overcommit'] = w('/proc/sys/vm/overcommit_memory', '1')\n"
        "R['binfmt_register'] = w('/proc/sys/fs/binfmt_misc/register', ':x:E::x::/tmp/x:')\n"
        "R['sysctl_syscall'] = sys_(156, 0)\n"
        "R['sethostname'] = call(libc.sethostname, b'pwned', 5)\n"
    )
    assert_denied(r, "hostname", "core_pattern", "drop_caches", "overcommit", "sethostname")
    assert r["modprobe"] in DENIED | {"ENOENT"}
    assert r["binfmt_register"] in DENIED | {"ENOENT"}  # ENOENT: binfmt_misc not mounted in the sandbox
    assert r["sysctl_syscall"] in DENIED | {"ENOSYS"}
    assert {p: Path("/proc/sys", p).read_text() for p in watched} == before


async def test_sysrq_trigger_and_kmsg_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        WRITE_HELPER
        + "R['sysrq_trigger'] = w('/proc/sysrq-trigger', 'h')\n"  # 'h' (help) is harmless if it got through
        "R['kmsg_write'] = w('/dev/kmsg', 'pwned')\n"
        "R['kmsg_read'] = io(lambda: os.read(os.open('/dev/kmsg', os.O_RDONLY), 1))\n"
        "R['syslog'] = sys_(103, 3, ctypes.create_string_buffer(64), 64)\n"  # SYSLOG_ACTION_READ_ALL
    )
    assert_denied(r, "syslog")
    assert r["sysrq_trigger"] in DENIED | {"ENOENT"}  # ENOENT: kernel built without magic sysrq
    assert r["kmsg_write"] in DENIED | {"ENOENT"} and r["kmsg_read"] in DENIED | {"ENOENT"}


async def test_sys_and_cgroup_release_agent_writes_fail(attacks: Attacks) -> None:
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    before = thp.read_text() if thp.exists() else None
    r = await attacks.results(
        "import glob\n" + WRITE_HELPER + "R['uevent_helper'] = w('/sys/kernel/uevent_helper', '/tmp/x')\n"
        "R['thp'] = w('/sys/kernel/mm/transparent_hugepage/enabled', 'never')\n"
        "R['sys_create'] = io(lambda: os.open('/sys/kernel/pwned', os.O_WRONLY | os.O_CREAT))\n"
        "ra = glob.glob('/sys/fs/cgroup/*/release_agent') + glob.glob('/sys/fs/cgroup/release_agent')\n"
        "R['release_agent'] = [w(p, '/tmp/x') for p in ra] or ['EACCES']\n"
        "nr = glob.glob('/sys/fs/cgroup/*/notify_on_release')\n"
        "R['notify_on_release'] = [w(p, '1') for p in nr] or ['EACCES']\n"
        "R['cgroup_mkdir'] = [io(lambda p=p: os.mkdir(p + '/x')) for p in glob.glob('/sys/fs/cgroup/*')]\n"
    )
    assert_denied(r, "thp", "sys_create")
    assert r["uevent_helper"] in DENIED | {"ENOENT"}  # ENOENT: kernel without CONFIG_UEVENT_HELPER
    for key in ("release_agent", "notify_on_release", "cgroup_mkdir"):
        assert all(v in DENIED for v in r[key]), (key, r[key])
    if before is not None:
        assert thp.read_text() == before


async def test_device_access_fails(attacks: Attacks) -> None:
    r = await attacks.results(
        "S_IFBLK, S_IFCHR = 0o060000, 0o020000\n"
        "R['mknod_sda'] = call(libc.mknod, b'/dev/sda-x', S_IFBLK | 0o600, os.makedev(8, 0))\n"
        "R['mknod_mem_root'] = call(libc.mknod, b'/mem-x', S_IFCHR | 0o600, os.makedev(1, 1))\n"
        "R['mknodat_kmsg'] = sys_(259, -100, b'/kmsg-x', S_IFCHR | 0o600, os.makedev(1, 11))\n"
        "R['devs'] = sorted(os.listdir('/dev'))\n"
        "for d in ('/dev/sda', '/dev/vda', '/dev/mem', '/dev/kmem', '/dev/port', '/dev/kmsg'):\n"
        "    R['open' + d] = io(lambda d=d: os.close(os.open(d, os.O_RDONLY)))\n"
        "R['ioperm'] = sys_(173, 0x80, 1, 1)\n"
        "R['iopl'] = sys_(172, 3)\n"
    )
    assert_denied(r, "mknod_sda", "mknod_mem_root", "mknodat_kmsg", "ioperm", "iopl")
    for d in ("sda", "vda", "mem", "kmem", "port", "kmsg"):
        assert r["open/dev/" + d] in DENIED | {"ENOENT"}, r
    assert set(r["devs"]) <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "ptmx",
        "pts",
        "shm",
        "mqueue",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "console",
        "core",
    }, r["devs"]


async def test_kcore_kallsyms_keys_are_masked(attacks: Attacks) -> None:
    r = await attacks.results(
        "def rd(p, n=4096):\n"
        "    try:\n"
        "        with open(p, 'rb') as f: return f.read(n)\n"
        "    except OSError as e: return errno.errorcode[e.errno]\n"
        "R['kcore'] = len(rd('/proc/kcore')) if isinstance(rd('/proc/kcore'), bytes) else rd('/proc/kcore')\n"
        "ks = rd('/proc/kallsyms', 1 << 16)\n"
        "R['kallsyms_nonzero'] = sum(1 for l in ks.splitlines() if int(l.split()[0], 16) != 0) "
        "if isinstance(ks, bytes) else ks\n"
        "R['kallsyms_lines'] = len(ks.splitlines()) if isinstance(ks, bytes) else 0\n"
        "for p in ('/proc/keys', '/proc/timer_list', '/proc/sched_debug'):\n"
        "    v = rd(p)\n"
        "    R[p] = len(v) if isinstance(v, bytes) else v\n"
        "R['kmem_via_proc_self_mem_of_1'] = io(lambda: open('/proc/1/mem', 'rb').read(1))\n"
    )
    assert r["kcore"] in (0, "ENOENT", "EACCES", "EPERM"), r
    assert r["kallsyms_nonzero"] == 0, f"kernel addresses leak through /proc/kallsyms: {r}"
    for p in ("/proc/keys", "/proc/timer_list", "/proc/sched_debug"):
        assert r[p] in (0, "ENOENT", "EACCES", "EPERM"), (p, r[p])


async def test_capabilities_are_reduced_and_cannot_be_raised(attacks: Attacks) -> None:
    r = await attacks.results(
        "lines = open('/proc/self/status').read().splitlines()\n"
        "st = dict(l.split(':\\t', 1) for l in lines if ':\\t' in l)\n"
        "for k in ('CapEff', 'CapPrm', 'CapBnd', 'CapInh', 'CapAmb', 'NoNewPrivs', 'Seccomp'):\n"
        "    R[k] = st[k].strip()\n"
        "PR_CAP_AMBIENT, RAISE = 47, 2\n"
        "R['ambient_sys_admin'] = call(libc.prctl, PR_CAP_AMBIENT, RAISE, 21, 0, 0)\n"
        "R['drop_nnp'] = call(libc.prctl, 38, 0, 0, 0, 0)\n"  # PR_SET_NO_NEW_PRIVS 0 is EINVAL
        "class H(ctypes.Structure): _fields_ = [('v', ctypes.c_uint32), ('pid', ctypes.c_int)]\n"
        "class D(ctypes.Structure): _fields_ = [('e', ctypes.c_uint32), ('p', ctypes.c_uint32),"
        " ('i', ctypes.c_uint32)]\n"
        "h = H(0x20080522, 0); d = (D * 2)()\n"
        "for x in d: x.e = x.p = 0xffffffff\n"
        "R['capset_all'] = sys_(126, ctypes.byref(h), d)\n"
    )
    bits = {
        "CAP_CHOWN": 0,
        "CAP_DAC_OVERRIDE": 1,
        "CAP_FOWNER": 3,
        "CAP_FSETID": 4,
        "CAP_KILL": 5,
        "CAP_SETGID": 6,
        "CAP_SETUID": 7,
        "CAP_SETPCAP": 8,
        "CAP_NET_BIND_SERVICE": 10,
        "CAP_SYS_CHROOT": 18,
        "CAP_MKNOD": 27,
        "CAP_AUDIT_WRITE": 29,
        "CAP_SETFCAP": 31,
    }
    expected = sum(1 << bits[c] for c in DEFAULT_CAPS)
    for k in ("CapEff", "CapPrm", "CapBnd"):
        assert int(r[k], 16) == expected, (k, r[k])
    assert int(r["CapAmb"], 16) == 0 and int(r["CapInh"], 16) == 0
    dangerous = [21, 19, 16, 17, 12, 13, 2, 25, 22, 24, 38, 39]  # SYS_ADMIN, PTRACE, MODULE, RAWIO, ...
    assert not any(int(r["CapEff"], 16) & (1 << b) for b in dangerous)
    assert r["NoNewPrivs"] == "1" and r["Seccomp"] == "2"
    assert_denied(r, "ambient_sys_admin", "capset_all")
    assert r["drop_nnp"] == "EINVAL"


# ----------------------------------------------------------------------------- kernel-level syscalls
async def test_kernel_module_load_fails(attacks: Attacks) -> None:
    modules = Path("/proc/modules")
    before = modules.read_text() if modules.exists() else ""  # absent: kernel without module support
    overlay_is_module = any(ln.startswith("overlay ") for ln in before.splitlines())
    r = await attacks.results(
        "fd = os.open('/usr/bin/python3', os.O_RDONLY)\n"
        "R['finit_module'] = sys_(313, fd, b'', 0)\n"
        "img = ctypes.create_string_buffer(b'\\x7fELF' + b'\\0' * 60)\n"
        "R['init_module'] = sys_(175, img, 64, b'')\n"
        "R['delete_module'] = sys_(176, b'overlay', 0x800)\n"  # O_NONBLOCK
        "R['create_module'] = sys_(174, b'x', 0)\n"
    )
    assert_denied(r, "finit_module", "init_module", "delete_module")
    assert r["create_module"] in DENIED | {"ENOSYS"}
    if overlay_is_module:  # delete_module did not unload it on the host
        assert any(ln.startswith("overlay ") for ln in modules.read_text().splitlines())


async def test_kexec_and_reboot_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "R['kexec_load'] = sys_(246, 0, 0, None, 0)\n"
        "R['kexec_file_load'] = sys_(320, -1, -1, 0, b'', 0x4)\n"  # KEXEC_FILE_UNLOAD
        "R['reboot_cad_off'] = sys_(169, 0xfee1dead, 672274793, 0, None)\n"  # LINUX_REBOOT_CMD_CAD_OFF
        "R['reboot_restart'] = sys_(169, 0xfee1dead, 672274793, 0x01234567, None)\n"
        "R['swapon'] = sys_(167, b'/tmp/swap', 0)\n"
        "R['acct'] = sys_(163, b'/tmp/acct')\n"
    )
    assert_denied(r, "kexec_load", "kexec_file_load", "reboot_cad_off", "reboot_restart", "swapon", "acct")


async def test_bpf_perf_io_uring_userfaultfd_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "attr = ctypes.create_string_buffer(128)\n"
        "le = lambda v: v.to_bytes(4, 'little')\n"
        "ctypes.memmove(attr, le(1) + le(4) + le(4)"
        " + (1).to_bytes(4, 'little'), 16)\n"  # BPF_MAP_TYPE_HASH, key 4, value 4, 1 entry
        "R['bpf_map_create'] = sys_(321, 0, attr, 128)\n"
        "pe = ctypes.create_string_buffer(128)\n"
        "ctypes.memmove(pe, (1).to_bytes(4, 'little') + (128).to_bytes(4, 'little'), 8)\n"  # SOFTWARE
        "R['perf_event_open_cpu'] = sys_(298, pe, -1, 0, -1, 0)\n"
        "R['perf_event_open_self'] = sys_(298, pe, 0, -1, -1, 0)\n"
        "params = ctypes.create_string_buffer(120)\n"
        "R['io_uring_setup'] = sys_(425, 4, params)\n"
        "R['userfaultfd'] = sys_(323, 0)\n"
    )
    assert_denied(
        r, "bpf_map_create", "perf_event_open_cpu", "perf_event_open_self", "io_uring_setup", "userfaultfd"
    )


async def test_keyring_syscalls_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "R['keyctl_join'] = sys_(250, 1, b'pwned')\n"  # KEYCTL_JOIN_SESSION_KEYRING
        "R['keyctl_read_session'] = sys_(250, 0, -3, 0)\n"
        "R['add_key'] = sys_(248, b'user', b'x', b'v', 1, -3)\n"
        "R['request_key'] = sys_(249, b'user', b'x', None, -3)\n"
    )
    assert_denied(r, "keyctl_join", "keyctl_read_session", "add_key", "request_key")


async def test_changing_system_time_fails(attacks: Attacks) -> None:
    r = await attacks.results(
        "class TS(ctypes.Structure): _fields_ = [('s', ctypes.c_long), ('ns', ctypes.c_long)]\n"
        "R['clock_settime'] = sys_(227, 0, ctypes.byref(TS(1000000000, 0)))\n"
        "R['settimeofday'] = sys_(164, ctypes.byref(TS(1000000000, 0)), None)\n"
        "tx = ctypes.create_string_buffer(208)\n"
        "ctypes.memmove(tx, (0x0001 | 0x2000).to_bytes(4, 'little'), 4)\n"  # ADJ_OFFSET|ADJ_NANO
        "R['adjtimex'] = sys_(159, tx)\n"
        "R['clock_adjtime'] = sys_(305, 0, tx)\n"
        "import subprocess\n"
        "R['date_cli'] = subprocess.run(['date', '-s', '@1000000000'], capture_output=True).returncode\n"
    )
    assert_denied(r, "clock_settime", "settimeofday", "adjtimex", "clock_adjtime")
    assert r["date_cli"] != 0
    assert time.time() > 1.7e9  # host clock untouched (2001 would be 1e9)


async def test_chroot_and_pivot_root_breakouts_fail(attacks: Attacks) -> None:
    r = await attacks.results(
        "os.makedirs('/jail/inner', exist_ok=True)\n"
        "keep = os.open('/', os.O_RDONLY)\n"
        "R['chroot'] = call(libc.chroot, b'/jail')\n"
        "R['fchdir_escape'] = io(lambda: os.fchdir(keep))\n"
        "for _ in range(64):\n"
        "    os.chdir('..')\n"
        "R['chroot_dot'] = call(libc.chroot, b'.')\n"
        "R['sees_bundle'] = any(os.path.isdir(os.path.join('/', d, 'sandboxes')) for d in ('run/faasd',))\n"
        "os.makedirs('/new/old', exist_ok=True)\n"
        "R['pivot_root'] = sys_(155, b'/new', b'/new/old')\n"
        "R['pivot_root_dot'] = sys_(155, b'.', b'.')\n"
        "R['root_is_own'] = os.stat('/').st_ino == os.stat('/proc/1/root/.').st_ino\n"
    )
    assert_denied(r, "chroot", "chroot_dot", "pivot_root", "pivot_root_dot")
    assert r["root_is_own"] is True


async def test_open_by_handle_at_shocker_fails(attacks: Attacks) -> None:
    r = await attacks.results(
        "fh = ctypes.create_string_buffer(8 + 128)\n"
        "ctypes.memmove(fh, (8).to_bytes(4, 'little') + (1).to_bytes(4, 'little')"
        " + (2).to_bytes(4, 'little') + (0).to_bytes(4, 'little'), 16)\n"  # ext4 root inode 2, gen 0
        "fd = os.open('/etc/hostname', os.O_RDONLY)\n"
        "R['open_by_handle_at'] = sys_(304, fd, fh, 0)\n"
        "mid = ctypes.c_int()\n"
        "h2 = ctypes.create_string_buffer(8 + 128); ctypes.memmove(h2, (128).to_bytes(4, 'little'), 4)\n"
        "R['name_to_handle_at'] = sys_(303, -100, b'/etc/hostname', h2, ctypes.byref(mid), 0)\n"
    )
    assert_denied(r, "open_by_handle_at", "name_to_handle_at")


async def test_leaked_runc_fd_workdir_escape_fails(attacks: Attacks, manager: SandboxManager) -> None:
    """CVE-2024-21626 (runc <= 1.1.11): an image WORKDIR of /proc/self/fd/N lands in the host's cgroupfs.

    A malicious image controls ``working_dir``; the process must not get a cwd outside its root, and no
    inherited fd may point at a host path.
    """
    escaped: list[str] = []
    for n in (4, 5, 6, 7, 8, 9):
        spec = attacks.spec(
            "python3",
            "-c",
            "import os\n"
            "try:\n    cwd = os.getcwd()\nexcept OSError as e:\n    cwd = 'ERR ' + str(e.errno)\n"
            "print('CWD', cwd)\n"
            "print('HOSTROOT', os.path.exists('../../../../../../../../etc/faasd-escape-probe'))\n"
            "for fd in os.listdir('/proc/self/fd'):\n"
            "    try: print('FD', fd, os.readlink('/proc/self/fd/' + fd))\n"
            "    except OSError: pass\n",
            cwd=f"/proc/self/fd/{n}",
        )
        try:
            res = await manager.run(spec, timeout_s=30)
        except FaasdError:  # runc refusing to start the process is a fine outcome
            continue
        out = res.stdout.decode(errors="replace")
        if "HOSTROOT True" in out or any(
            ln.startswith("FD ") and ("/sys/fs/cgroup" in ln or ("/run/" in ln and "faasd" in ln))
            for ln in out.splitlines()
        ):
            escaped.append(f"cwd=/proc/self/fd/{n}: {out!r}")
    assert not escaped, escaped


# ----------------------------------------------------------------------------- network
async def test_host_network_not_reachable(attacks: Attacks) -> None:
    accepted: list[int] = []

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(1)
        w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    uport = udp.getsockname()[1]
    try:
        r = await attacks.results(
            "R['ifaces'] = sorted(n for _, n in socket.if_nameindex())\n"
            "R['routes'] = open('/proc/net/route').read().splitlines()[1:]\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"R['tcp_host_lo'] = s.connect_ex(('127.0.0.1', {port}))\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"R['udp_send'] = io(lambda: u.sendto(b'pwned', ('127.0.0.1', {uport})))\n"
            "s2 = socket.socket(); s2.settimeout(2)\n"
            "R['tcp_outside'] = s2.connect_ex(('10.0.0.1', 80))\n"
            "R['abstract_unix'] = io(lambda: socket.socket(socket.AF_UNIX).connect('\\0/containerd-shim'))\n"
        )
        await asyncio.sleep(0.2)
        assert r["ifaces"] == ["lo"]
        assert r["routes"] == []
        assert r["tcp_host_lo"] != 0 and r["tcp_outside"] != 0
        assert r["abstract_unix"] != "ok"
        assert accepted == []
        with pytest.raises(BlockingIOError):
            udp.recvfrom(100)  # nothing arrived on the host's loopback
    finally:
        udp.close()
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------------- pid namespace / signals
async def test_signals_to_host_processes_impossible(attacks: Attacks) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        r = await attacks.results(
            "import signal\n"
            "R['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
            f"R['kill_host_pid'] = io(lambda: os.kill({victim.pid}, signal.SIGKILL))\n"
            f"R['kill_pytest_pid'] = io(lambda: os.kill({os.getpid()}, 0))\n"
            "child = os.fork()\n"
            "if child == 0:\n"
            "    os.kill(-1, signal.SIGKILL); os._exit(0)\n"  # kill everything we can see
            "os.waitpid(child, 0)\n"
            f"R['host_pid_visible'] = os.path.exists('/proc/{victim.pid}')\n"
        )
        assert max(r["pids"]) < 64, r["pids"]  # only our own namespace's pids
        assert r["kill_host_pid"] in {"ESRCH", "EPERM"}
        assert r["kill_pytest_pid"] in {"ESRCH", "EPERM"}
        assert r["host_pid_visible"] is False
        assert victim.poll() is None, "a host process was killed from inside a sandbox"
    finally:
        victim.kill()
        victim.wait()


# ----------------------------------------------------------------------------- users
async def test_setuid0_as_non_root_user_fails(attacks: Attacks) -> None:
    r = await attacks.results(
        "R['ids'] = os.getresuid()\n"
        "R['setuid0'] = io(lambda: os.setuid(0))\n"
        "R['setreuid'] = io(lambda: os.setresuid(0, 0, 0))\n"
        "R['setgid0'] = io(lambda: os.setgid(0))\n"
        "R['setgroups'] = io(lambda: os.setgroups([0]))\n"
        "R['chown_etc'] = io(lambda: os.chown('/etc/passwd', 1000, 1000))\n"
        "R['write_shadow'] = io(lambda: open('/etc/shadow', 'a'))\n"
        "import subprocess\n"
        "R['su'] = subprocess.run(['su', '-c', 'id -u'], input=b'\\n', capture_output=True).returncode\n",
        user="1000:1000",
    )
    assert r["ids"] == [1000, 1000, 1000]
    assert_denied(r, "setuid0", "setreuid", "setgid0", "setgroups", "chown_etc", "write_shadow")
    assert r["su"] != 0


async def test_setuid_root_binary_in_image_grants_nothing(
    attacks: Attacks, python_rootfs: Path, tmp_path: Path
) -> None:
    layer = tmp_path / "evil-layer"
    (layer / "usr/local/bin").mkdir(parents=True)
    suid = layer / "usr/local/bin/pysuid"
    shutil.copy2(python_rootfs / "usr/bin/python3.11", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    # a second copy made setuid at runtime by root inside the sandbox is tried from the uid-1000 process too
    r = await attacks.results(
        "import subprocess\n"
        "R['mode'] = oct(os.stat('/usr/local/bin/pysuid').st_mode)\n"
        "probe = 'import os; print(os.getresuid()); os.setuid(0)'\n"
        "p = subprocess.run(['/usr/local/bin/pysuid', '-c', probe],"
        " capture_output=True)\n"
        "R['suid_ids'] = p.stdout.decode().strip()\n"
        "R['suid_rc'] = p.returncode\n",
        user="1000:1000",
        lowers=[python_rootfs, layer],
    )
    assert r["mode"] == "0o104755"  # the setuid bit is really there
    assert r["suid_ids"] == "(1000, 1000, 1000)", r
    assert r["suid_rc"] != 0  # and setuid(0) fails in it


async def test_root_made_setuid_binary_does_not_elevate_dropped_child(attacks: Attacks) -> None:
    r = await attacks.results(
        "import shutil, subprocess\n"
        "shutil.copy('/usr/bin/python3.11', '/usr/local/bin/rootpy')\n"
        "os.chmod('/usr/local/bin/rootpy', 0o4755)\n"
        "probe = 'import os; print(os.geteuid())'\n"
        "p = subprocess.run(['/usr/local/bin/rootpy', '-c', probe], capture_output=True,"
        " user=1000, group=1000, extra_groups=[])\n"
        "R['child_euid'] = p.stdout.decode().strip()\n"
    )
    assert r["child_euid"] == "1000", r


# ----------------------------------------------------------------------------- cross-sandbox, host files
async def test_sandbox_cannot_see_another_sandboxs_files(
    attacks: Attacks, manager: SandboxManager, settings: Settings
) -> None:
    marker = "mark" + os.urandom(6).hex()
    a_spec = attacks.spec(
        "sh", "-c", f"echo {marker} > /tmp/{marker}; echo {marker} > /{marker}-root; echo ready; sleep 60"
    )
    a = await manager.create(a_spec)
    try:
        await a.start()
        for _ in range(200):
            if b"ready" in a.stdout():
                break
            await asyncio.sleep(0.05)
        assert b"ready" in a.stdout()
        a_bundle = str(a.bundle)
        assert a.rootfs is not None and a.rootfs.upper is not None
        assert (a.rootfs.upper / f"{marker}-root").exists()  # the host sees A's upper
        r = await attacks.results(
            f"marker = {marker!r}\n"
            "found = []\n"
            "for top in ('/', '/tmp', '/run', '/var', '/dev/shm', '/proc'):\n"
            "    for dp, dns, fns in os.walk(top):\n"
            "        if dp.startswith(('/proc/', '/sys')): dns[:] = []\n"
            "        found += [os.path.join(dp, f) for f in fns if marker in f]\n"
            "R['found'] = sorted(set(found))\n"
            f"R['a_bundle_visible'] = os.path.exists({a_bundle!r})\n"
            f"R['a_id_in_mountinfo'] = {a.id!r} in open('/proc/self/mountinfo').read()\n"
            "R['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        )
        assert r["found"] == []
        assert r["a_bundle_visible"] is False
        assert r["a_id_in_mountinfo"] is False
        assert max(r["pids"]) < 64
    finally:
        await a.destroy()


async def test_secret_mounted_in_a_is_readonly_and_invisible_in_b(
    attacks: Attacks, manager: SandboxManager, tmp_path: Path
) -> None:
    value = "s3cr3t-" + os.urandom(8).hex()
    sdir = tmp_path / "secrets-a"
    sdir.mkdir()
    (sdir / "db-password").write_text(value)
    (sdir / "db-password").chmod(0o444)
    mount = BindMount(source=sdir, target="/run/secrets", readonly=True)
    code_a = (
        "R['read'] = open('/run/secrets/db-password').read()\n"
        "R['write'] = io(lambda: open('/run/secrets/db-password', 'w').write('x'))\n"
        "R['create'] = io(lambda: open('/run/secrets/new', 'w'))\n"
        "R['chmod'] = io(lambda: os.chmod('/run/secrets/db-password', 0o666))\n"
        "R['unlink'] = io(lambda: os.unlink('/run/secrets/db-password'))\n"
        "R['remount_rw'] = call(libc.mount, None, b'/run/secrets', None, 32 | 4096, None)\n"
    )
    code_b = (
        f"value = {value!r}\n"
        "R['listing'] = os.listdir('/run/secrets') if os.path.isdir('/run/secrets') else None\n"
        "hits = []\n"
        "for dp, dns, fns in os.walk('/'):\n"
        "    if dp.startswith(('/proc', '/sys', '/usr', '/dev')): dns[:] = []; continue\n"
        "    for f in fns:\n"
        "        p = os.path.join(dp, f)\n"
        "        try:\n"
        "            if os.path.getsize(p) < 1 << 20 and value.encode() in open(p, 'rb').read():\n"
        "                hits.append(p)\n"
        "        except OSError: pass\n"
        "R['hits'] = hits\n"
        f"R['host_path_visible'] = os.path.exists({str(sdir)!r})\n"
    )
    spec_a = attacks.spec("python3", "-c", "import time; time.sleep(60)", mounts=[mount])
    a = await manager.create(spec_a)
    try:
        await a.start()
        ra, rb = await asyncio.gather(
            attacks.results(code_a, mounts=[mount], user="1000:1000"),
            attacks.results(code_b),
        )
        probe = "import os; print(os.access('/run/secrets/db-password', os.W_OK))"
        ex = await a.exec(["python3", "-c", probe])
        assert ex.stdout.strip() == b"False"  # not even root in A can write it
    finally:
        await a.destroy()
    assert ra["read"] == value
    assert_denied(ra, "write", "create", "chmod", "unlink", "remount_rw")
    assert rb["listing"] in (None, [])
    assert rb["hits"] == []
    assert rb["host_path_visible"] is False
    assert (sdir / "db-password").read_text() == value and sorted(os.listdir(sdir)) == ["db-password"]


async def test_ipc_and_abstract_sockets_are_per_sandbox(attacks: Attacks, manager: SandboxManager) -> None:
    """SysV shm, POSIX mqueues and abstract unix sockets of sandbox A are invisible to sandbox B."""
    key = int.from_bytes(os.urandom(3), "big") + 1
    tag = "fdsec" + os.urandom(4).hex()
    a_code = (
        "import ctypes, socket, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"shm = libc.shmget({key}, 4096, 0o1666)\n"  # IPC_CREAT | 0666
        f"mq = open('/dev/mqueue/{tag}', 'w') if os.path.isdir('/dev/mqueue') else None\n"
        "s = socket.socket(socket.AF_UNIX); "
        f"s.bind('\\0{tag}'); s.listen(1)\n"
        "print('ready', shm, flush=True); time.sleep(60)\n"
    )
    a = await manager.create(attacks.spec("python3", "-c", a_code))
    try:
        await a.start()
        for _ in range(300):
            if b"ready" in a.stdout():
                break
            await asyncio.sleep(0.02)
        assert b"ready" in a.stdout() and not a.stdout().split()[1].startswith(b"-"), a.stdout() + a.stderr()
        r = await attacks.results(
            f"R['shmget'] = call(libc.shmget, {key}, 0, 0)\n"
            f"R['mqueue'] = os.path.exists('/dev/mqueue/{tag}')\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"R['abstract'] = io(lambda: s.connect('\\0{tag}'))\n"
            f"R['in_net_unix'] = '@{tag}' in open('/proc/net/unix').read()\n"
        )
    finally:
        await a.destroy()
    assert r["shmget"] == "ENOENT"
    assert r["mqueue"] is False
    assert r["abstract"] == "ECONNREFUSED" and r["in_net_unix"] is False


async def test_proc_pid_exe_of_runc_cannot_be_opened_for_writing(
    attacks: Attacks, manager: SandboxManager
) -> None:
    """CVE-2019-5736 shape: while the host runs ``runc exec`` into the sandbox, a root process inside
    grabs /proc/<pid>/exe of every new process and tries to reopen it for writing (never writes)."""
    runc = shutil.which("runc")
    assert runc is not None
    digest_before = _sha256(Path(runc))
    code = (
        "import os, time, json\n"
        "opened, hits, seen, denied = {}, [], set(), set()\n"
        "print('ready', flush=True)\n"
        "end = time.time() + 8\n"
        "while time.time() < end:\n"
        "    for p in os.listdir('/proc'):\n"
        "        if not p.isdigit() or p in ('1', str(os.getpid())) or p in opened: continue\n"
        "        try:\n"
        "            opened[p] = os.open(f'/proc/{p}/exe', os.O_PATH)\n"
        "            seen.add(os.readlink(f'/proc/self/fd/{opened[p]}'))\n"
        "        except OSError:\n"
        "            try: denied.add(open(f'/proc/{p}/comm').read().strip())\n"
        "            except OSError: pass\n"
        "    for p, fd in list(opened.items()):\n"
        "        try:\n"
        "            target = os.readlink(f'/proc/self/fd/{fd}')\n"
        "            w = os.open(f'/proc/self/fd/{fd}', os.O_WRONLY)\n"
        "            os.close(w); hits.append(target)\n"
        "        except OSError: pass\n"
        "        if p in opened and not os.path.exists(f'/proc/{p}'):\n"
        "            os.close(opened.pop(p))\n"
        "R = {'hits': sorted(set(hits)), 'seen': sorted(seen), 'denied': sorted(denied)}\n"
        "print('RESULT', json.dumps(R), flush=True)\n"
        "time.sleep(60)\n"
    )
    sb = await manager.create(attacks.spec("python3", "-c", code))
    try:
        await sb.start()
        for _ in range(300):
            if b"ready" in sb.stdout():
                break
            await asyncio.sleep(0.02)
        for _ in range(20):
            await sb.exec(["sleep", "0.05"], timeout=30)
        for _ in range(600):
            if b"RESULT" in sb.stdout():
                break
            await asyncio.sleep(0.02)
        line = next(ln for ln in sb.stdout().decode().splitlines() if ln.startswith("RESULT "))
    finally:
        await sb.destroy()
    import json

    result = json.loads(line[len("RESULT ") :])
    print("exe seen:", result["seen"], "exe denied for:", result["denied"], "writable:", result["hits"])
    # writable targets may only be the container's own files (e.g. /usr/bin/sleep on its overlay)
    foreign = [t for t in result["hits"] if not t.startswith("/") or "runc" in t]
    assert not foreign, result
    assert _sha256(Path(runc)) == digest_before, "the host's runc binary changed"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_host_shadow_and_data_dir_not_readable(
    attacks: Attacks, settings: Settings, python_rootfs: Path
) -> None:
    marker = "host-marker-" + os.urandom(6).hex()
    (settings.data_dir / marker).write_text(marker)
    r = await attacks.results(
        "R['shadow'] = open('/etc/shadow').read()\n"
        f"R['data_dir_visible'] = os.path.exists({str(settings.data_dir)!r})\n"
        f"R['run_dir_visible'] = os.path.exists({str(settings.run_dir)!r})\n"
        f"R['marker_at_path'] = os.path.exists({str(settings.data_dir / marker)!r})\n"
        "R['var_lib_faasd'] = any(os.path.exists('/var/lib/faasd/' + f) for f in ('faasd.db', 'admin.key'))\n"
        "R['proc1_root_shadow'] = open('/proc/1/root/etc/shadow').read()\n"
    )
    own = (python_rootfs / "etc/shadow").read_text()
    assert r["shadow"] == own and r["proc1_root_shadow"] == own  # the image's own file
    host_shadow = Path("/etc/shadow").read_text()
    if host_shadow != own:
        assert r["shadow"] != host_shadow
    assert r["data_dir_visible"] is False and r["run_dir_visible"] is False
    assert r["marker_at_path"] is False and r["var_lib_faasd"] is False


async def test_io_dir_cannot_be_used_to_fill_host_disk(attacks: Attacks, manager: SandboxManager) -> None:
    """``/run/faasd-io`` is a read-write bind of a host dir: writes there must be bounded like disk_mb."""
    code = (
        "import errno, sys\n"
        "written, err = 0, None\n"
        "try:\n"
        "    with open('/run/faasd-io/fill', 'wb') as f:\n"
        "        while written < (96 << 20):\n"
        "            f.write(b'x' * (1 << 20)); f.flush(); written += 1 << 20\n"
        "except OSError as e:\n"
        "    err = errno.errorcode.get(e.errno)\n"
        "print(err, written >> 20)\n"
    )
    sb = await manager.create(attacks.spec("python3", "-c", code, limits=Limits(disk_mb=32, tmp_mb=16)))
    try:
        await sb.start()
        status = await sb.wait(60)
        on_host = sb.io_dir / "fill"
        host_mb = on_host.stat().st_size >> 20 if on_host.exists() else 0
        err, written = sb.stdout().split()
    finally:
        await sb.destroy()
    assert status.exit_code == 0
    assert host_mb < 32, f"disk_mb=32 sandbox put {host_mb} MiB on the host fs via /run/faasd-io ({err!r})"
    assert err in (b"ENOSPC", b"EDQUOT") and int(written) < 96
