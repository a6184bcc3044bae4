"""``http`` mode: the image's own HTTP server is the container's process, listening on ``port`` inside the
sandbox's network namespace.

Requests are forwarded as HTTP/1.1 through a connection opened from inside that namespace (no bridge, no
published port; :class:`faasd.runtime.netns_http.NetnsTransport`); the response body streams as
``StreamChunk("body", ...)``. httpx is imported only when an http-mode worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from faasd.errors import ConflictError, InvalidInputError, ResourceLimitError, RuntimeFailure
from faasd.runtime.agent_client import InvokeEvent, InvokeRequest, InvokeResult, StreamChunk, Timings
from faasd.runtime.headers import FRAMING, HOP_BY_HOP, relayable
from faasd.runtime.proxy import open_connection_in_netns
from faasd.runtime.sandbox import Sandbox
from faasd.runtime.workers.spec import WorkerSpec

if TYPE_CHECKING:
    import httpx


def new_http_client(sandbox: Sandbox) -> httpx.AsyncClient:
    """The client that reaches the server inside ``sandbox`` (imports httpx)."""
    import httpx

    from faasd.runtime.netns_http import NetnsTransport

    return httpx.AsyncClient(transport=NetnsTransport(sandbox), timeout=None)


async def wait_http_ready(
    sandbox: Sandbox,
    spec: WorkerSpec,
    client: httpx.AsyncClient,
    timeout_s: float,
    *,
    alive: Callable[[], Awaitable[bool]],
    describe_death: Callable[[], Awaitable[str]],
) -> None:
    """Wait until the server accepts connections on ``spec.port`` (and answers ``GET readiness_path``
    with a status < 500 when set). A server that exits is :class:`InvalidInputError`."""
    import httpx

    deadline = time.monotonic() + timeout_s
    delay = 0.002
    last = "nothing is listening yet"
    while True:
        if not await alive():
            raise InvalidInputError(
                f"the HTTP server of function {spec.function!r} exited while starting "
                f"{await describe_death()}"
            )
        try:
            if spec.readiness_path is None:
                _, writer = await open_sandbox_connection(sandbox, spec.port, "127.0.0.1", 1.0)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return
            resp = await client.get(server_url(spec.port, spec.readiness_path, ""), timeout=2.0)
            if resp.status_code < 500:
                return
            last = f"GET {spec.readiness_path} answered {resp.status_code}"
        except (OSError, TimeoutError, httpx.HTTPError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise RuntimeFailure(
                f"the HTTP server of function {spec.function!r} did not answer "
                f"on port {spec.port} "
                f"within {timeout_s:.1f} s ({last}); check that it listens on 0.0.0.0:{spec.port}"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def invoke_http(
    client: httpx.AsyncClient,
    spec: WorkerSpec,
    request: InvokeRequest,
    *,
    init_ms: float | None,
    alive: Callable[[], Awaitable[bool]],
) -> AsyncIterator[InvokeEvent]:
    """Forward the request; yield the response body as ``StreamChunk("body", ...)`` while it arrives
    (server-sent events, long responses), then the result (with the whole body)."""
    import httpx

    headers = relayable(request.headers.items(), HOP_BY_HOP | FRAMING)
    started = time.perf_counter()
    body = bytearray()
    try:
        async with (
            asyncio.timeout(request.timeout_s),
            client.stream(
                request.method,
                server_url(spec.port, request.path, request.query),
                headers=headers,
                content=request.body,
                timeout=request.timeout_s,
            ) as resp,
        ):
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > spec.max_response_bytes:
                    raise ResourceLimitError(
                        f"the function's response exceeds the limit of {spec.max_response_bytes} bytes",
                        limit="response_bytes",
                        worker_usable=True,
                    )
                yield StreamChunk("body", chunk)
    except (httpx.TimeoutException, TimeoutError):
        raise ResourceLimitError(
            f"the function did not answer within its timeout of {request.timeout_s} s",
            limit="timeout",
            timeout_s=request.timeout_s,
            worker_usable=True,
        ) from None
    except (httpx.HTTPError, OSError) as exc:
        raise RuntimeFailure(
            f"the HTTP request to function {spec.function!r} failed: {type(exc).__name__}: {exc}",
            worker_usable=await alive(),
        ) from None
    ms = round((time.perf_counter() - started) * 1000, 3)
    yield InvokeResult(
        status=resp.status_code,
        headers=relayable(resp.headers.multi_items()),
        body=bytes(body),
        timings=Timings(init_ms=init_ms, run_ms=ms, total_ms=ms),
    )


def server_url(port: int, path: str, query: str) -> httpx.URL:
    import httpx

    return httpx.URL(
        scheme="http",
        host="127.0.0.1",
        port=port,
        path=path or "/",
        query=query.encode() if query else None,
    )


async def open_sandbox_connection(
    sandbox: Sandbox, port: int, host: str, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if hasattr(sandbox, "open_connection"):
        return await sandbox.open_connection(port, host, timeout_s=timeout_s)
    netns = getattr(sandbox, "netns", None)
    if netns is None:
        raise ConflictError(f"sandbox {sandbox.id} has no network namespace")
    return await open_connection_in_netns(netns, port, host, timeout_s=timeout_s)
