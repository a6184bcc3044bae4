"""Network failures of a function's upstream, through a real daemon.

A python function deployed with ``network: egress`` fetches a URL from a real HTTP server in another
network namespace (:class:`faasd.testing.upstream.Upstream`, reached through the host's routing and the
sandbox's NAT). The path then breaks the ways real networks break: the server goes away (refused), the
route disappears (ICMP unreachable), packets are silently dropped (hang). Each failure must reach the
caller as a clear function error or a 504 time-out, the platform must keep serving, the function must
work again once the network heals, and nothing may be left behind (veths, NAT rules, netns).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.sdk import Client, FaasdAPIError
from faasd.testing.helpers import deploy_function, unique_name
from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer
from faasd.testing.upstream import Upstream

pytestmark = [pytest.mark.chaos]

FETCH = """
import os
import urllib.request

INIT = os.urandom(8).hex()  # differs in every fresh start, kept by a restore


def handle(event, context):
    req = event.json()
    with urllib.request.urlopen(req["url"], timeout=req.get("timeout", 10)) as resp:
        return {"status": resp.status, "body": resp.read().decode(), "init": INIT}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv:
        yield srv


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream.create()
    try:
        yield up
    finally:
        up.close()
        assert not up.leftovers(), up.leftovers()


@pytest.fixture
def client(server: FaasdServer) -> Iterator[Client]:
    with server.client(timeout=120.0) as c:
        yield c


def _deploy(server: FaasdServer, client: Client, tmp_path: Path, **options: object) -> str:
    src = tmp_path / "fetch"
    src.mkdir(exist_ok=True)
    (src / "handler.py").write_text(FETCH)
    name = unique_name("net")
    deploy_function(
        client, name, source=src, server=server, runtime="python", handler="handler.handle",
        min_replicas=1, max_replicas=1, **options,  # type: ignore[arg-type]
    )
    return name


def _faasd_net_state(name: str) -> list[str]:
    """NAT/filter rules and host veths of this function's sandboxes (ids start with fd-<name>-)."""
    tag = f"faasd:fd-{name}-"
    left = []
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
        left += [line for line in rules.splitlines() if tag in line]
    netns = Path("/run/netns")
    if netns.is_dir():
        left += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith(f"fd-{name}-")]
    return left


def _fetch(client: Client, name: str, url: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    return client.invoke(name, {"url": url, "timeout": timeout})


def test_upstream_failures_reach_the_caller_clearly_and_the_function_recovers(
    server: FaasdServer, client: Client, upstream: Upstream, tmp_path: Path
) -> None:
    name = _deploy(server, client, tmp_path, network="egress", timeout_s=60)
    assert client.get_function(name).network == "egress"

    ok = _fetch(client, name, upstream.url)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == 200 and ok.json()["body"] == "upstream-ok"

    # the server goes away: refused, reported as the function's own error; the worker keeps serving
    upstream.stop_server()
    refused = _fetch(client, name, upstream.url)
    assert refused.status_code == 500 and refused.error is not None, refused.text
    assert "Connection refused" in refused.error["message"], refused.error
    upstream.start_server()
    again = _fetch(client, name, upstream.url)
    assert again.status_code == 200 and again.cold_start is False, again.text

    # the route disappears: the host answers ICMP unreachable
    upstream.unreachable()
    unreachable = _fetch(client, name, upstream.url)
    assert unreachable.status_code == 500 and unreachable.error is not None, unreachable.text
    assert "No route to host" in unreachable.error["message"], unreachable.error

    # packets are dropped: the function's own socket time-out fires
    upstream.heal()
    upstream.blackhole()
    dropped = _fetch(client, name, upstream.url, timeout=1.0)
    assert dropped.status_code == 500 and dropped.error is not None, dropped.text
    assert "timed out" in dropped.error["message"], dropped.error

    upstream.heal()
    healed = _fetch(client, name, upstream.url)
    assert healed.status_code == 200 and healed.cold_start is False, healed.text
    assert healed.json()["body"] == "upstream-ok"

    client.delete_function(name)
    assert not _faasd_net_state(name)


def test_a_hanging_upstream_is_cut_off_by_the_function_timeout(
    server: FaasdServer, client: Client, upstream: Upstream, tmp_path: Path
) -> None:
    name = _deploy(server, client, tmp_path, network="egress", timeout_s=2)
    assert _fetch(client, name, upstream.url).status_code == 200
    upstream.blackhole()
    # the function waits far longer than its 2 s limit: the platform stops it and says so
    with pytest.raises(FaasdAPIError) as info:
        _fetch(client, name, upstream.url, timeout=120.0)
    assert info.value.status == 504 and info.value.code == "timeout", info.value
    upstream.heal()
    # the timed-out worker was replaced; the new one reaches the healed upstream
    after = _fetch(client, name, upstream.url)
    assert after.status_code == 200, after.text
    assert after.json()["body"] == "upstream-ok"
    client.delete_function(name)
    assert not _faasd_net_state(name)


def test_without_egress_the_upstream_is_unreachable(
    server: FaasdServer, client: Client, upstream: Upstream, tmp_path: Path
) -> None:
    name = _deploy(server, client, tmp_path)
    assert client.get_function(name).network == "none"
    res = _fetch(client, name, upstream.url, timeout=5.0)
    assert res.status_code == 500 and res.error is not None, res.text
    assert "Network is unreachable" in res.error["message"], res.error
    client.delete_function(name)
    assert not _faasd_net_state(name)


def test_checkpointed_function_keeps_egress_after_restore(
    server: FaasdServer, client: Client, upstream: Upstream, tmp_path: Path
) -> None:
    name = _deploy(server, client, tmp_path, network="egress", mode="checkpointed")
    first = _fetch(client, name, upstream.url)
    assert first.status_code == 200, first.text
    [checkpoint] = client.list_snapshots(function=name)
    client.scale(name, 0)  # drop the warm worker: the next one is a CRIU restore of the checkpoint
    restored = _fetch(client, name, upstream.url)
    assert restored.status_code == 200 and restored.cold_start is True, restored.text
    assert restored.json()["body"] == "upstream-ok"
    assert restored.json()["init"] == first.json()["init"]  # a restore, not a fresh start
    upstream.stop_server()
    refused = _fetch(client, name, upstream.url)
    assert refused.error is not None and "Connection refused" in refused.error["message"], refused.text
    assert [s.id for s in client.list_snapshots(function=name)] == [checkpoint.id]  # no new checkpoint
    client.delete_function(name)
    assert not _faasd_net_state(name)
