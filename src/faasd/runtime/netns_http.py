"""HTTP to a server inside a sandbox's network namespace (``http``-mode workers), over httpx/httpcore.

Imported only when an ``http``-mode worker starts, so the daemon does not load httpx for the other modes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx

from faasd.runtime.sandbox import Sandbox

__all__ = ["NetnsTransport"]


class _StreamAdapter(httpcore.AsyncNetworkStream):
    """httpcore's view of an asyncio connection opened inside a sandbox's netns."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except TimeoutError:
            raise httpcore.ReadTimeout("timed out reading from the function") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing to the function") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from None

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def get_extra_info(self, info: str) -> Any:
        return None


class _NetnsBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            reader, writer = await self.sandbox.open_connection(port, host, timeout_s=timeout or 5.0)
        except TimeoutError:
            raise httpcore.ConnectTimeout(
                f"connecting to port {port} in sandbox {self.sandbox.id} timed out"
            ) from None
        except OSError as exc:
            raise httpcore.ConnectError(f"port {port} in sandbox {self.sandbox.id}: {exc}") from None
        return _StreamAdapter(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not supported by the netns transport")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class NetnsTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections are opened inside a sandbox's network namespace.

    No keep-alive: every request gets its own connection, closed afterwards, so nothing stays connected
    between requests (a CRIU checkpoint must not see an established connection).
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=_NetnsBackend(sandbox), max_keepalive_connections=0, http1=True, http2=False
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            resp = await self._pool.handle_async_request(req)
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc), request=request) from exc
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except httpcore.NetworkError as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc
        except httpcore.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_ResponseStream(resp),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, resp: httpcore.Response) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._resp.aiter_stream():
                yield part
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.ReadError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()
