"""Exposed ports of instances: host listeners on ``127.0.0.1`` that connect into the sandbox per connection.

Each connection to a listener goes through :meth:`InstanceRegistry.use` (so it resumes an auto-paused
instance first) and is piped to the port inside the sandbox's network namespace
(:meth:`Sandbox.open_connection`). The instance record keeps the exposed ports (with the host port) so
that the next start re-opens them, on the same host port when it is still free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from faasd.errors import ConflictError, IsolationUnsupportedError, NotFoundError
from faasd.platform.instances.registry import InstanceRegistry, LiveInstance
from faasd.platform.instances.specs import PortSpec
from faasd.runtime.proxy import pipe

log = logging.getLogger(__name__)


async def expose(registry: InstanceRegistry, instance_id: str, req: PortSpec) -> dict[str, Any]:
    async with registry.lock(instance_id):
        inst = registry.get(instance_id)
        live = registry.live.get(instance_id)
        if live is None:
            raise ConflictError(f"instance {instance_id} is {inst.status}; start it first")
        ports = [dict(p) for p in inst.ports or []]
        for p in ports:
            if p["internal_port"] == req.internal_port and req.internal_port in live.servers:
                return p
        if inst.isolation == "gvisor":
            raise IsolationUnsupportedError(
                f"instance {instance_id} runs under gVisor, whose own network stack the host cannot "
                "connect into: ports cannot be exposed; use exec, or an instance with isolation 'runc'",
                isolation="gvisor",
            )
        entry = {"internal_port": req.internal_port, "protocol": req.protocol, "subdomain": req.subdomain}
        entry = await listen(registry, instance_id, live, entry, None)
        ports = [p for p in ports if p["internal_port"] != req.internal_port] + [entry]
        registry.update(instance_id, ports=ports)
        return entry


def host_port(registry: InstanceRegistry, instance_id: str, internal_port: int) -> int:
    inst = registry.get(instance_id)
    for p in inst.ports or []:
        if p["internal_port"] == internal_port and p.get("host_port"):
            live = registry.live.get(instance_id)
            if live is None:
                raise ConflictError(f"instance {instance_id} is {inst.status}; start it first")
            return int(p["host_port"])
    raise NotFoundError(
        f"port {internal_port} of instance {instance_id} is not exposed; "
        f"POST /api/v1/instances/{instance_id}/ports first",
        port=internal_port,
    )


async def reopen(
    registry: InstanceRegistry, instance_id: str, live: LiveInstance, ports: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Listeners for the ports a (re)started instance had exposed: on the same host port when it is
    still free, else on a new one. Returns the updated port entries."""
    out = []
    for p in ports:
        try:
            out.append(await listen(registry, instance_id, live, dict(p), p.get("host_port")))
        except OSError:
            out.append(await listen(registry, instance_id, live, dict(p), None))
    return out


async def listen(
    registry: InstanceRegistry,
    instance_id: str,
    live: LiveInstance,
    entry: dict[str, Any],
    host_port: int | None,
) -> dict[str, Any]:
    port = int(entry["internal_port"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with registry.use(instance_id) as sb:
                up_r, up_w = await sb.open_connection(port)
                try:
                    await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
                finally:
                    up_w.close()
        except Exception as exc:  # a client of the proxy: log, never crash the listener
            log.debug("proxy connection to %s:%d failed: %s", instance_id, port, exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", host_port or 0)
    bound = server.sockets[0].getsockname()[1]
    live.servers[port] = server
    scheme = "http" if entry.get("protocol", "http") == "http" else "tcp"
    return {**entry, "host_port": bound, "url": f"{scheme}://127.0.0.1:{bound}"}
