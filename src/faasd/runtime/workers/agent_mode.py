"""``python`` / ``node`` modes: the container's process is the faasd agent; requests go over the agent
protocol on ``<bundle>/io/agent.sock`` (:class:`faasd.runtime.agent_client.AgentClient`).

The agent is bind-mounted read-only at ``/faasd/agent``. Python can run each request in-process
(fastest) or in a child forked from the preloaded process (``fork_per_request``: no state leaks between
requests). The Node agent runs under ``faasd-init`` (Node does not reap orphaned processes; the Python
agent does it itself as PID 1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from faasd.errors import InvalidInputError
from faasd.runtime.agent_client import AgentClient, InvokeEvent, InvokeRequest, InvokeResult
from faasd.runtime.agent_files import AGENT_SOCKET_NAME
from faasd.runtime.agent_ready import ReadySignal
from faasd.runtime.sandbox import Sandbox
from faasd.runtime.workers.spec import WorkerSpec


def new_agent_client(sandbox: Sandbox, spec: WorkerSpec) -> AgentClient:
    return AgentClient(
        sandbox.io_dir / AGENT_SOCKET_NAME,
        max_body_bytes=spec.max_response_bytes,
        max_output_bytes=spec.max_output_bytes,
    )


async def wait_agent_ready(
    client: AgentClient,
    spec: WorkerSpec,
    timeout_s: float,
    *,
    alive: Callable[[], Awaitable[bool]],
    describe_death: Callable[[], Awaitable[str]],
    signal: ReadySignal | None = None,
) -> dict[str, Any]:
    """Wait for the agent's ``pong``; a handler that failed to load is :class:`InvalidInputError`."""
    pong = await client.wait_ready(timeout_s, alive=alive, describe_death=describe_death, signal=signal)
    if not pong.get("ready", False):
        raise InvalidInputError(
            f"the handler {pong.get('handler')!r} of function {spec.function!r} "
            "failed to load:\n"
            f"{pong.get('error', '').strip()}",
            traceback=pong.get("error", ""),
        )
    return pong


async def invoke_agent(
    client: AgentClient, request: InvokeRequest, *, init_ms: float | None
) -> AsyncIterator[InvokeEvent]:
    """The agent's events for ``request`` (output chunks as the function writes them, then the result)."""
    async for event in client.invoke_stream(request):
        if isinstance(event, InvokeResult):
            event.timings.init_ms = init_ms
        yield event
