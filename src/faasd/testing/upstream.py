"""A real HTTP upstream in its own network namespace, for testing functions deployed with ``network: egress``.

Egress sandboxes may not open connections to the host itself, so a server on the host's loopback is out
of their reach. :class:`Upstream` puts the server where a real dependency would be: behind a router.
It creates a network namespace with a veth pair to the host (a private /30 from ``10.213.0.0/16``,
outside faasd's own egress pool), runs a small HTTP server inside that answers ``GET /`` with
:attr:`Upstream.body`, and can break the path in the ways real networks break:

* :meth:`stop_server` / :meth:`start_server`: nothing listens (connections are refused);
* :meth:`blackhole`: packets are silently dropped (connects hang until the caller's time-out);
* :meth:`unreachable`: the host routes the address nowhere and answers with ICMP unreachable;
* :meth:`heal`: undo :meth:`blackhole` and :meth:`unreachable`.

Every address involved is private and local to this machine. Needs root. Always :meth:`close` it (or
use it as a context manager): the namespace, the veth pair, the route and the server are removed::

    with Upstream.create() as up:
        deploy(..., network="egress")
        invoke(..., {"url": up.url})
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from faasd.errors import RuntimeFailure

NETNS_DIR = Path("/run/netns")
POOL = ipaddress.ip_network("10.213.0.0/16")
PORT = 8080

_SERVER = r"""
import http.server, sys
body = sys.argv[2].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H)
print("ready", flush=True)
srv.serve_forever()
"""


def _run(*argv: str) -> None:
    res = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeFailure(f"{' '.join(argv)} failed: {res.stderr.strip()}")


@dataclass
class Upstream:
    """See the module docstring. Create with :meth:`create`."""

    name: str
    host_if: str
    host_ip: str
    ip: str
    body: str = "upstream-ok"
    port: int = PORT
    _server: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _broken: set[str] = field(default_factory=set, repr=False)

    @property
    def netns(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}/"

    @classmethod
    def create(cls, body: str = "upstream-ok") -> Upstream:
        """A fresh namespace, veth pair and /30, with the server running."""
        from pyroute2 import IPRoute, netns

        token = secrets.token_hex(4)
        name, host_if, peer_if = f"fdt-up-{token}", f"fduh{token}", f"fdup{token}"
        with IPRoute() as ipr:
            used = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)}
        for _ in range(64):
            base = int(POOL.network_address) + secrets.randbelow(POOL.num_addresses // 4) * 4
            host_ip, ip = str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))
            if host_ip not in used:
                break
        else:  # pragma: no cover - 16k /30s, a handful in use
            raise RuntimeFailure("no free /30 left in 10.213.0.0/16 for a test upstream")
        up = cls(name=name, host_if=host_if, host_ip=host_ip, ip=ip, body=body)
        try:
            netns.create(name)
            ns_fd = os.open(str(up.netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute() as ipr:
                    ipr.link("add", ifname=host_if, kind="veth", peer=peer_if)
                    ipr.link("set", index=ipr.link_lookup(ifname=peer_if)[0], net_ns_fd=ns_fd)
                    hidx = ipr.link_lookup(ifname=host_if)[0]
                    ipr.addr("add", index=hidx, address=host_ip, prefixlen=30)
                    ipr.link("set", index=hidx, state="up")
            finally:
                os.close(ns_fd)
            up._in_ns("ip", "link", "set", "lo", "up")
            up._in_ns("ip", "addr", "add", f"{ip}/30", "dev", peer_if)
            up._in_ns("ip", "link", "set", peer_if, "up")
            up.start_server()
        except BaseException:
            up.close()
            raise
        return up

    def _in_ns(self, *argv: str) -> None:
        _run("nsenter", f"--net={self.netns}", *argv)

    # ------------------------------------------------------------------ the server
    def start_server(self, timeout_s: float = 30.0) -> None:
        """Start the HTTP server (no-op when it runs); returns once it accepts connections."""
        if self._server is not None and self._server.poll() is None:
            return
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", sys.executable, "-c", _SERVER, str(self.port), self.body],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._server = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else b""  # "ready" once listening, b"" if it died
        if line.strip() != b"ready":
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            self.stop_server()
            raise RuntimeFailure(f"the test upstream server did not start: {err.strip()[-500:]}")

    def stop_server(self) -> None:
        """Kill the server: connections to :attr:`url` are refused from now on."""
        proc, self._server = self._server, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    # ------------------------------------------------------------------ breaking the path
    def blackhole(self) -> None:
        """Drop every packet to the server's port inside the upstream: connects hang, nothing answers."""
        if "blackhole" not in self._broken:
            self._in_ns("iptables", "-w", "-I", "INPUT", "-p", "tcp", "--dport", str(self.port), "-j", "DROP")
            self._broken.add("blackhole")

    def unreachable(self) -> None:
        """Route the upstream's address to nowhere on the host: senders get ICMP host unreachable."""
        if "unreachable" not in self._broken:
            _run("ip", "route", "add", "unreachable", f"{self.ip}/32")
            self._broken.add("unreachable")

    def heal(self) -> None:
        """Undo :meth:`blackhole` and :meth:`unreachable` (the server's state is left as it is)."""
        if "blackhole" in self._broken:
            self._in_ns("iptables", "-w", "-D", "INPUT", "-p", "tcp", "--dport", str(self.port), "-j", "DROP")
            self._broken.discard("blackhole")
        if "unreachable" in self._broken:
            _run("ip", "route", "del", "unreachable", f"{self.ip}/32")
            self._broken.discard("unreachable")

    # ------------------------------------------------------------------ cleanup
    def close(self) -> None:
        """Remove the server, route, veth pair and namespace. Idempotent."""
        from pyroute2 import IPRoute, netns

        self.stop_server()
        with contextlib.suppress(RuntimeFailure):
            if "unreachable" in self._broken:
                _run("ip", "route", "del", "unreachable", f"{self.ip}/32")
        self._broken.clear()
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.host_if)
            if idx:
                ipr.link("del", index=idx[0])  # takes its peer in the namespace with it
        if self.netns.exists():
            netns.remove(self.name)

    def leftovers(self) -> list[str]:
        """What :meth:`close` should have removed but is still there (for leak checks)."""
        left = []
        if self.netns.exists():
            left.append(f"netns {self.netns}")
        if Path(f"/sys/class/net/{self.host_if}").exists():
            left.append(f"veth {self.host_if}")
        routes = subprocess.run(["ip", "route", "show", f"{self.ip}/32"], capture_output=True, text=True)
        if routes.stdout.strip():
            left.append(f"route {routes.stdout.strip()}")
        return left

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
