"""Network namespaces of sandboxes.

Every sandbox gets its own netns, created by us and pinned at ``/run/netns/fd-<id>`` (the same place
``ip netns`` uses, so ``ip netns exec`` works for debugging), passed to runc by path. Keeping it
outside the container's lifetime lets CRIU restore rejoin the same namespace.

* ``none`` / ``loopback-proxy``: only ``lo``, up.
* ``egress``: additionally a veth pair; the sandbox end is ``eth0`` with the 2nd address of a private
  /30 from ``10.211.0.0/16`` (allocated host-wide through lock files in ``/run/faasd-net/alloc``), the
  host end has the 1st; default route via the host end; MASQUERADE for traffic leaving the /30.

Egress means *out*, never sideways and never to the host. Per sandbox, at the top of the filter chains
(so no other rule of the host's firewall can accept first), tagged ``faasd:<id>``:

* INPUT from the sandbox's veth: only replies (``ESTABLISHED,RELATED``); nothing the sandbox starts
  reaches the host, whatever host address it aims at (its own gateway, another sandbox's gateway, any
  other address of the host).
* FORWARD from the veth to anything in the egress pool: dropped (no sandbox reaches another sandbox),
  and from the veth with a source other than the sandbox's own address: dropped (no spoofing).
* FORWARD into the veth: only replies (nothing routed through the host opens a connection to a sandbox;
  the host itself still can, through OUTPUT).
* IPv6 is off on both ends of the veth (no link-local path around the IPv4 rules); ``rp_filter`` is
  strict on the host end.

All rules of one sandbox are applied in one ``iptables-restore --noflush`` transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import os
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from faasd.errors import CapacityError, RuntimeFailure
from faasd.filelock import locked_file
from faasd.rootfs import mounts
from faasd.runtime import nsutil

NETNS_DIR = Path("/run/netns")
ALLOC_DIR = Path("/run/faasd-net/alloc")
EGRESS_POOL = ipaddress.ip_network("10.211.0.0/16")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def netns_path(sandbox_id: str) -> Path:
    return NETNS_DIR / sandbox_id


_netns_dir_ready = False


def ensure_netns_dir() -> None:
    """Make ``/run/netns`` (shared mount point, like iproute2) before pinning a netns there."""
    _ensure_netns_dir()


def lo_up() -> None:
    """Bring ``lo`` up in the calling thread's netns."""
    _lo_up()


def _ensure_netns_dir() -> None:
    global _netns_dir_ready
    if _netns_dir_ready and NETNS_DIR.is_dir():
        return
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    if mounts.is_mountpoint(NETNS_DIR):
        _netns_dir_ready = True
        return
    # like iproute2: make /run/netns a shared mount point so pins propagate to later mount namespaces
    with locked_file(NETNS_DIR.parent / ".faasd-netns.lock"):
        if not mounts.is_mountpoint(NETNS_DIR):
            mounts.mount(str(NETNS_DIR), NETNS_DIR, None, mounts.MS_BIND | mounts.MS_REC)
            with contextlib.suppress(OSError):
                mounts.mount("none", NETNS_DIR, None, (1 << 20) | mounts.MS_REC)  # MS_SHARED
        _netns_dir_ready = True


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def create_netns(sandbox_id: str) -> Path:
    """Create and pin a fresh netns with ``lo`` up. Blocking (~1 ms); run in a worker thread."""
    _ensure_netns_dir()
    path = netns_path(sandbox_id)
    fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def pin() -> None:
        mounts.mount("/proc/thread-self/ns/net", path, None, mounts.MS_BIND)
        _lo_up()

    try:
        nsutil.in_new_netns(pin)
    except BaseException:
        delete_netns(sandbox_id)
        raise
    return path


def delete_netns(sandbox_id: str) -> None:
    """Unpin and remove the netns file. Idempotent. The netns dies with its last user."""
    path = netns_path(sandbox_id)
    try:
        mounts.umount(path, mounts.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted / not there: nothing to unpin
            raise RuntimeFailure(f"could not unpin network namespace {path}: {exc}") from exc
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def list_netns(prefix: str = "fd-") -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def interfaces_in(netns: Path) -> list[str]:
    """Interface names inside ``netns`` (diagnostics/tests)."""
    return nsutil.call_in_netns(netns, lambda: [name for _, name in socket.if_nameindex()])


# --------------------------------------------------------------------- egress
@dataclass(frozen=True)
class EgressLink:
    sandbox_id: str
    index: int
    host_if: str
    host_ip: str
    sandbox_ip: str
    subnet: str


def _ifnames(sandbox_id: str) -> tuple[str, str]:
    h = hashlib.sha256(sandbox_id.encode()).hexdigest()[:10]
    return f"fdh{h}", f"fdp{h}"


def _allocate(sandbox_id: str) -> int:
    ALLOC_DIR.mkdir(parents=True, exist_ok=True)
    n = EGRESS_POOL.num_addresses // 4
    start = int(hashlib.sha256(sandbox_id.encode()).hexdigest()[:8], 16) % n
    for k in range(n):
        i = (start + k) % n
        try:
            fd = os.open(str(ALLOC_DIR / str(i)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(sandbox_id)
        (ALLOC_DIR / f"{sandbox_id}.idx").write_text(str(i))
        return i
    raise CapacityError("no free /30 left for sandbox networking; destroy idle sandboxes")


def _release(sandbox_id: str) -> None:
    marker = ALLOC_DIR / f"{sandbox_id}.idx"
    with contextlib.suppress(OSError, ValueError):
        slot = ALLOC_DIR / str(int(marker.read_text()))
        if slot.read_text() == sandbox_id:
            slot.unlink()
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()


def egress_link(sandbox_id: str) -> EgressLink | None:
    """The egress link set up for ``sandbox_id`` (by this or an earlier daemon process), from its /30
    allocation; None when it has none. For re-adopting a running sandbox after a daemon restart."""
    try:
        index = int((ALLOC_DIR / f"{sandbox_id}.idx").read_text())
        if (ALLOC_DIR / str(index)).read_text() != sandbox_id:
            return None
    except (OSError, ValueError):
        return None
    base = int(EGRESS_POOL.network_address) + index * 4
    host_if, _ = _ifnames(sandbox_id)
    return EgressLink(
        sandbox_id, index, host_if, str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2)),
        f"{ipaddress.ip_address(base)}/30",
    )


def has_egress(sandbox_id: str) -> bool:
    host_if, _ = _ifnames(sandbox_id)
    return (ALLOC_DIR / f"{sandbox_id}.idx").exists() or Path(f"/sys/class/net/{host_if}").exists()


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeFailure(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res


def _iptables_rules(link: EgressLink) -> dict[str, list[str]]:
    """The rules of one egress link, per table, in ``iptables-restore`` syntax (``-I`` = at the top)."""
    tag = f'-m comment --comment "faasd:{link.sandbox_id}"'
    replies = "-m conntrack --ctstate ESTABLISHED,RELATED"
    h, pool = link.host_if, str(EGRESS_POOL)
    return {
        "filter": [
            # the order of -I lines is reversed in the chain: the last one inserted ends up first
            f"-I INPUT -i {h} {tag} -j DROP",
            f"-I INPUT -i {h} {replies} {tag} -j ACCEPT",
            f"-I FORWARD -o {h} {tag} -j DROP",
            f"-I FORWARD -o {h} {replies} {tag} -j ACCEPT",
            f"-I FORWARD -i {h} -d {pool} {tag} -j DROP",
            f"-I FORWARD -i {h} ! -s {link.sandbox_ip}/32 {tag} -j DROP",
        ],
        "nat": [f"-A POSTROUTING -s {link.subnet} ! -d {link.subnet} {tag} -j MASQUERADE"],
    }


def _iptables_restore(tables: dict[str, list[str]]) -> None:
    payload = "".join(f"*{table}\n" + "\n".join(rules) + "\nCOMMIT\n" for table, rules in tables.items())
    res = subprocess.run(
        ["iptables-restore", "-w", "--noflush"], input=payload, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeFailure(f"iptables-restore failed: {res.stderr.strip()}\n{payload}")


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys/net", path).write_text(value)


def setup_egress(sandbox_id: str, netns: Path) -> EgressLink:
    """veth pair + /30 + default route + NAT for one sandbox. Blocking; undone by :func:`teardown_egress`."""
    from pyroute2 import IPRoute

    index = _allocate(sandbox_id)
    base = int(EGRESS_POOL.network_address) + index * 4
    host_ip, sb_ip = str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))
    subnet = f"{ipaddress.ip_address(base)}/30"
    host_if, peer_if = _ifnames(sandbox_id)
    link = EgressLink(sandbox_id, index, host_if, host_ip, sb_ip, subnet)
    try:
        ns_fd = os.open(str(netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=host_if, kind="veth", peer=peer_if)
                peer = ipr.link_lookup(ifname=peer_if)[0]
                ipr.link("set", index=peer, net_ns_fd=ns_fd)
                hidx = ipr.link_lookup(ifname=host_if)[0]
                ipr.addr("add", index=hidx, address=host_ip, prefixlen=30)
                ipr.link("set", index=hidx, state="up")
        finally:
            os.close(ns_fd)

        _sysctl(f"ipv6/conf/{host_if}/disable_ipv6", "1")
        _sysctl(f"ipv4/conf/{host_if}/rp_filter", "1")

        def inside() -> None:
            # /proc/sys/net is the calling thread's netns: this turns IPv6 off inside the sandbox
            _sysctl("ipv6/conf/all/disable_ipv6", "1")
            _sysctl("ipv6/conf/default/disable_ipv6", "1")
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=peer_if)[0]
                ipr.link("set", index=idx, ifname="eth0")
                ipr.addr("add", index=idx, address=sb_ip, prefixlen=30)
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=host_ip)

        nsutil.call_in_netns(netns, inside)
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        _iptables_restore(_iptables_rules(link))
    except BaseException:
        teardown_egress(sandbox_id)
        raise
    return link


def teardown_egress(sandbox_id: str) -> None:
    """Remove the veth, NAT rules and the /30 of ``sandbox_id``. Idempotent (cheap no-op without egress)."""
    if not has_egress(sandbox_id):
        return
    host_if, _ = _ifnames(sandbox_id)
    tag = f'"faasd:{sandbox_id}"'
    doomed: dict[str, list[str]] = {}
    for table in ("nat", "filter"):
        res = _run(["iptables", "-w", "-t", table, "-S"], check=False)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("-A ") and tag in ln]
        if lines:
            doomed[table] = ["-D " + ln[3:] for ln in lines]
    if doomed:
        _iptables_restore(doomed)
    with contextlib.suppress(Exception):
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=host_if)
            if idx:
                ipr.link("del", index=idx[0])
    _release(sandbox_id)


async def acreate_netns(sandbox_id: str) -> Path:
    return await asyncio.get_running_loop().run_in_executor(nsutil.executor(), create_netns, sandbox_id)
