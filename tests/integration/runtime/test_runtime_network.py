"""Networking of sandboxes: setns proxy to a server inside, LoopbackProxy, optional egress veth + NAT."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable

import pytest

from faasd.runtime import NetworkSpec, Sandbox, SandboxManager, SandboxSpec
from faasd.runtime import network as net
from faasd.runtime.proxy import LoopbackProxy, open_connection_in_netns

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]
SERVER = ["python3", "-m", "http.server", "8000", "--bind", "{bind}", "--directory", "/run/faasd-io"]


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    path: str = "/hello.txt") -> bytes:
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def _wait_listening(sb: Sandbox, port: int) -> None:
    for _ in range(200):
        try:
            _, w = await sb.open_connection(port, timeout_s=1)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} in {sb.id}: {sb.stderr()!r}")


async def test_setns_connection_reaches_server_inside(manager: SandboxManager, make_spec: Spec,
                                                      no_leaks: Callable[[], None]) -> None:
    args = [a.format(bind="127.0.0.1") for a in SERVER]
    sb = await manager.create(make_spec(*args, network=NetworkSpec(mode="loopback-proxy", ports=(8000,))))
    try:
        (sb.io_dir / "hello.txt").write_text(sb.id)
        await sb.start()
        await _wait_listening(sb, 8000)
        assert sb.netns is not None
        r, w = await open_connection_in_netns(sb.netns, 8000)
        body = await _http_get(r, w)
        assert body.startswith(b"HTTP/1.0 200") and body.rstrip().endswith(sb.id.encode())
        async with LoopbackProxy(sb.netns, 8000) as proxy:
            results = await asyncio.gather(*[
                _http_get(*await asyncio.open_connection("127.0.0.1", proxy.port)) for _ in range(5)])
        assert all(b.startswith(b"HTTP/1.0 200") for b in results)
        p = await sb.proxy(8000)  # closed by destroy
        body = await _http_get(*await asyncio.open_connection("127.0.0.1", p.port))
        assert body.startswith(b"HTTP/1.0 200")
    finally:
        await sb.destroy()
    no_leaks()


async def test_proxy_to_closed_port_closes_client(manager: SandboxManager, make_spec: Spec) -> None:
    sb = await manager.create(make_spec("sleep", "30"))
    try:
        await sb.start()
        with pytest.raises(ConnectionRefusedError):
            await sb.open_connection(9)
        async with LoopbackProxy(sb.netns or "", 9) as proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(r.read(), 10) == b""
            w.close()
    finally:
        await sb.destroy()


async def test_egress_veth_and_nat(manager: SandboxManager, make_spec: Spec, sid: str,
                                   no_leaks: Callable[[], None]) -> None:
    args = [a.format(bind="0.0.0.0") for a in SERVER]
    sb = await manager.create(make_spec(*args, network=NetworkSpec(mode="egress")))
    try:
        assert sb.egress is not None and sb.netns is not None
        assert sorted(net.interfaces_in(sb.netns)) == ["eth0", "lo"]
        nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"], capture_output=True,
                             text=True, check=True).stdout
        assert f"-s {sb.egress.subnet}" in nat and f"faasd:{sid}" in nat and "MASQUERADE" in nat
        (sb.io_dir / "hello.txt").write_text(sb.id)
        await sb.start()
        await _wait_listening(sb, 8000)
        # ingress from the host over the veth, to the sandbox's own /30 address (never outside)
        body = await _http_get(*await asyncio.open_connection(sb.egress.sandbox_ip, 8000))
        assert body.startswith(b"HTTP/1.0 200")
        # the sandbox cannot open connections to the host itself
        r = await sb.exec(["python3", "-c", "import socket; s = socket.socket(); s.settimeout(1); "
                           f"print(s.connect_ex(('{sb.egress.host_ip}', 22)))"], timeout=20)
        assert r.stdout.strip() != b"0"
    finally:
        await sb.destroy()
    no_leaks()
