"""No sandbox reaches another sandbox or the host, whatever the network modes of the pair.

Every attacker runs a real TCP connect from inside its sandbox against every address a victim could be
reached at: the victim's own address on its egress link, the host's end of the victim's link, the host's
end of the attacker's own link, and the host's other addresses, each on a port where a server really
listens (so a refusal means the firewall dropped it, not that nothing was there). The same server is
reachable from the host, which proves each target was live.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from security_helpers import Attacks

from faasd.runtime import NetworkSpec, Sandbox, SandboxManager
from faasd.runtime import network as net

pytestmark = [pytest.mark.security, pytest.mark.integration]

PORT = 8000
SERVER = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET6 if HAS6 else socket.AF_INET)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('::' if HAS6 else '0.0.0.0', PORT)); s.listen(16)\n"
    "open('/run/faasd-io/ready', 'w').write('1')\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'victim'); c.close()\n"
)
# Connects to each (host, port) with a short time-out; prints {target: "ok" | errno name | "timeout"}.
PROBE = r"""
import errno, json, socket, sys
out = {}
for target in json.loads(sys.argv[1]):
    host, port = target.rsplit(":", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(1.5)
    try:
        s.connect((host, int(port)))
        out[target] = "ok:" + s.recv(16).decode(errors="replace")
    except socket.timeout:
        out[target] = "timeout"
    except OSError as e:
        out[target] = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
print(json.dumps(out))
"""


def _host_addresses() -> list[str]:
    """The host's own IPv4 addresses outside loopback and outside the egress pool."""
    out: list[str] = []
    for _, name in socket.if_nameindex():
        if name == "lo" or name.startswith("fdh"):
            continue
        try:
            import fcntl
            import struct

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            out.append(socket.inet_ntoa(raw[20:24]))
        except OSError:
            continue
    return out


class Pair:
    def __init__(self, manager: SandboxManager, attacks: Attacks) -> None:
        self.manager, self.attacks = manager, attacks
        self.sandboxes: list[Sandbox] = []

    async def victim(self, mode: str) -> Sandbox:
        code = f"PORT = {PORT}\nHAS6 = False\n" + SERVER
        spec = self.attacks.spec("python3", "-c", code, network=NetworkSpec(mode=mode))  # type: ignore[arg-type]
        sb = await self.manager.create(spec, stdin_pipe=False)
        self.sandboxes.append(sb)
        await sb.start()
        for _ in range(300):
            if (sb.io_dir / "ready").exists():
                return sb
            await asyncio.sleep(0.02)
        raise AssertionError(f"victim server never started: {sb.stderr()!r}")

    async def attacker(self, mode: str) -> Sandbox:
        spec = self.attacks.spec("sleep", "300", network=NetworkSpec(mode=mode))  # type: ignore[arg-type]
        sb = await self.manager.create(spec, stdin_pipe=False)
        self.sandboxes.append(sb)
        await sb.start()
        return sb

    async def probe(self, attacker: Sandbox, targets: list[str]) -> dict[str, str]:
        res = await attacker.exec(["python3", "-c", PROBE, json.dumps(targets)], timeout=60)
        assert res.exit_code == 0, res.stderr
        data: dict[str, str] = json.loads(res.stdout)
        return data


@pytest.fixture
async def pair(manager: SandboxManager, attacks: Attacks) -> AsyncIterator[Pair]:
    p = Pair(manager, attacks)
    yield p
    for sb in p.sandboxes:
        await sb.destroy()


def _targets(victim: Sandbox, attacker: Sandbox) -> list[str]:
    targets: list[str] = []
    if victim.egress is not None:
        targets += [f"{victim.egress.sandbox_ip}:{PORT}", f"{victim.egress.host_ip}:{PORT}"]
    if attacker.egress is not None:
        targets.append(f"{attacker.egress.host_ip}:{PORT}")
    targets += [f"{ip}:{PORT}" for ip in _host_addresses()]
    return targets


@pytest.fixture
async def host_server() -> AsyncIterator[int]:
    """A server on the host, on all addresses at PORT's neighbour: what a sandbox must not reach."""
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"host")
        await w.drain()
        w.close()

    server = await asyncio.start_server(serve, "0.0.0.0", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("attacker_mode", "victim_mode"),
    [("egress", "egress"), ("egress", "none"), ("none", "egress"), ("egress", "loopback-proxy"),
     ("loopback-proxy", "egress"), ("none", "none")],
)
async def test_no_sandbox_reaches_another_or_the_host(
    pair: Pair, host_server: int, attacker_mode: str, victim_mode: str
) -> None:
    victim = await pair.victim(victim_mode)
    attacker = await pair.attacker(attacker_mode)
    targets = _targets(victim, attacker)
    targets += [f"{ip}:{host_server}" for ip in _host_addresses()]
    if attacker.egress is not None:
        targets.append(f"{attacker.egress.host_ip}:{host_server}")
    if victim.egress is not None:
        targets.append(f"{victim.egress.host_ip}:{host_server}")
        # the victim's server is live: the host reaches it on the victim's own address
        r, w = await asyncio.open_connection(victim.egress.sandbox_ip, PORT)
        assert await asyncio.wait_for(r.read(), 5) == b"victim"
        w.close()
    assert targets, "nothing to probe"
    results = await pair.probe(attacker, targets)
    reached = {t: v for t, v in results.items() if v.startswith("ok")}
    assert not reached, f"{attacker_mode} sandbox reached {reached} (all results: {results})"


async def test_egress_link_has_no_ipv6_and_strict_rules(pair: Pair) -> None:
    sb = await pair.attacker("egress")
    assert sb.egress is not None and sb.netns is not None
    host_if = sb.egress.host_if
    assert Path(f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6").read_text().strip() == "1"
    res = await sb.exec(["python3", "-c", "print(open('/proc/net/if_inet6').read())"], timeout=20)
    assert res.stdout.strip() == b"", res.stdout  # no IPv6 address at all inside, link-local included
    # the rules sit at the top of the chains, before anything the host's own firewall has
    import subprocess

    for chain in ("INPUT", "FORWARD"):
        rules = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, text=True,
                               check=True).stdout.splitlines()[1:]
        assert f"faasd:{sb.id}" in rules[0], rules[:4]


@pytest.mark.skipif(shutil.which("criu") is None, reason="criu not installed")
async def test_restored_egress_sandbox_is_isolated_too(
    pair: Pair, manager: SandboxManager, attacks: Attacks, tmp_path: Path
) -> None:
    """A CRIU-restored egress sandbox gets a fresh link with the same rules: the pair stays apart."""
    victim = await pair.victim("egress")
    src = await pair.attacker("egress")
    image = tmp_path / "criu"
    await src.runtime.checkpoint(src.id, image, work_path=tmp_path / "work", leave_running=False)
    await src.wait(10)
    dumped: dict[str, Any] = json.loads(src.config_path.read_text())
    old_bundle, old_id = str(src.bundle), src.id

    def rewrite(new: Sandbox) -> dict[str, Any]:
        text = json.dumps(dumped).replace(old_bundle, "@@B@@").replace(old_id, new.id)
        return dict(json.loads(text.replace("@@B@@", str(new.bundle))))

    spec = attacks.spec("sleep", "300", network=NetworkSpec(mode="egress"))
    restored = await manager.restore(spec, image, rewrite)
    pair.sandboxes.append(restored)
    assert restored.egress is not None and net.has_egress(restored.id)
    results = await pair.probe(restored, _targets(victim, restored))
    reached = {t: v for t, v in results.items() if v.startswith("ok")}
    assert not reached, f"restored sandbox reached {reached} (all results: {results})"


def test_rule_set_covers_every_path() -> None:
    """Unit-level guard on the rule set itself (the integration tests above prove it end to end)."""
    link = net.EgressLink("fd-x", 0, "fdhX", "10.211.0.1", "10.211.0.2", "10.211.0.0/30")
    rules: Callable[[], dict[str, list[str]]] = lambda: net._iptables_rules(link)  # noqa: E731
    filt = rules()["filter"]
    assert any("-I FORWARD -i fdhX -d 10.211.0.0/16" in r and r.endswith("DROP") for r in filt)
    assert any("-I FORWARD -o fdhX" in r and "ESTABLISHED" not in r and r.endswith("DROP") for r in filt)
    assert any("-I INPUT -i fdhX" in r and "ESTABLISHED" not in r and r.endswith("DROP") for r in filt)
