"""Helpers of the stress/soak tests: deploy the echo function, read the daemon's RSS."""

from __future__ import annotations

import contextlib
from pathlib import Path

from faasd.sdk import NotFound
from faasd.testing.helpers import deploy_function, unique_name
from faasd.testing.server import FaasdServer

ECHO = '''
def handle(event, context):
    return {"i": event.json()["i"]}
'''


def deploy_echo(server: FaasdServer, tmp_path: Path, **options: object) -> str:
    """Deploy the echo handler (returns ``{"i": <request's i>}``); returns its name."""
    src = tmp_path / "echo"
    src.mkdir(exist_ok=True)
    (src / "handler.py").write_text(ECHO)
    name = unique_name("stress")
    with server.client(timeout=300.0) as client:
        deploy_function(client, name, source=src, server=server, runtime="python",
                        handler="handler.handle", **options)  # type: ignore[arg-type]
    return name


def delete_function(server: FaasdServer, name: str) -> None:
    with server.client(timeout=120.0) as client, contextlib.suppress(NotFound):
        client.delete_function(name)


def daemon_rss_kib(server: FaasdServer) -> int:
    """VmRSS of the daemon process (kB, from /proc/<pid>/status)."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {server.process.pid} (daemon exited?)")
