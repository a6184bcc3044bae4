"""Direct function addresses with the real ``faasd`` daemon: shown by the API, SDK and CLI, served from
the host with plain HTTP by a socket that lives in the host's network namespace but is held by the
sandboxed agent, and released on delete, on a clean shutdown, and after kill -9 + restart."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys

import httpx
import pytest
from platform_real_helpers import direct_addresses_left

from faasd.runtime import loaddr
from faasd.sdk import Client
from fixtures.daemon import Daemon, daemon_env, free_port

pytestmark = pytest.mark.integration
__all__ = ["daemon_env"]


def lo_faas() -> str:
    return subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo", "label", "lo:faas"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def listener_holders(address: str) -> list[int]:
    """Pids holding a socket listening on ``address:80``, as ``ss`` sees it in the host's netns."""
    out = subprocess.run(
        ["ss", "-Hltnp", "src", f"{address}:80"], capture_output=True, text=True, check=True
    ).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def test_direct_address_with_the_daemon(daemon_env: tuple[Daemon, str], unique_id: str) -> None:
    d, image = daemon_env
    d.start()
    key = (d.settings.data_dir / "admin.key").read_text().strip()
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=d.url, headers=h, timeout=60) as c:
        r = c.post(
            "/api/v1/functions", json={"name": unique_id, "image": image, "scale": {"min": 1, "max": 2}}
        )
        assert r.status_code == 201, r.text
        address = r.json()["address"]
        assert address is not None and r.json()["direct_url"] == f"http://{address}/"
        assert f"inet {address}/32 scope host lo:faas" in lo_faas()
        with Client(d.url, api_key=key) as sdk:
            assert sdk.get_function(unique_id).address == address
        cli = subprocess.run(
            [sys.executable, "-c", "from faasd.cli.main import app; app()", "ls"],
            env={**os.environ, "FAAS_URL": d.url, "FAAS_API_KEY": key, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert cli.returncode == 0 and address in cli.stdout, cli.stdout + cli.stderr

        # plain HTTP from the host, no gateway; the agent in the sandbox holds the host-netns socket
        r = httpx.post(f"http://{address}/", content=b"hi", timeout=60)
        assert r.status_code == 200 and r.text == "echo:hi"
        holders = listener_holders(address)
        host_ns = os.readlink("/proc/self/ns/net")
        in_sandbox = [p for p in holders if os.readlink(f"/proc/{p}/ns/net") != host_ns]
        assert in_sandbox, f"no sandboxed process holds the listener: {holders}"
        assert d.proc is not None and d.proc.pid in holders  # the daemon keeps its own copy

        # kill -9: the address stays on lo with the dead daemon; the restart takes it back and serves it
        stale = str(list(ipaddress.IPv4Network(d.settings.direct_pool).hosts())[-1])
        loaddr.add(stale)  # and a leftover nobody owns
        d.kill9()
        assert f"inet {address}/32" in lo_faas()
        d.port = free_port()
        d.start()
    with httpx.Client(base_url=d.url, headers=h, timeout=60) as c:
        assert c.get(f"/api/v1/functions/{unique_id}").json()["address"] == address
        assert stale not in lo_faas()
        r = httpx.post(f"http://{address}/", content=b"back", timeout=60)
        assert r.status_code == 200 and r.text == "echo:back"

        # delete releases it
        assert c.delete(f"/api/v1/functions/{unique_id}").status_code in (200, 204)
        assert address not in lo_faas()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{address}/", timeout=5)

        # a clean shutdown releases every address (and the registry keeps it for the next start)
        r = c.post(
            "/api/v1/functions", json={"name": unique_id, "image": image, "scale": {"min": 1, "max": 1}}
        )
        address = r.json()["address"]
        assert f"inet {address}/32" in lo_faas()
    d.stop_gracefully()
    assert direct_addresses_left(d.settings) == []
