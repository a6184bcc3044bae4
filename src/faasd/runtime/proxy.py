"""Reach servers listening inside a sandbox's network namespace from the host, without a bridge.

:func:`open_connection_in_netns` creates the TCP socket *inside* the netns (a socket stays bound to the
netns it was created in), on a dedicated thread that enters the netns with setns(2) and leaves it
again; the connect and all I/O then happen on the event loop as usual.

:class:`LoopbackProxy` listens on host ``127.0.0.1:<port>`` and splices every client to a fresh
upstream connection made that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from faasd.errors import RuntimeFailure
from faasd.runtime import nsutil


def _socket_in_netns(netns: Path | str, family: int) -> socket.socket:
    def make() -> socket.socket:
        return socket.socket(family, socket.SOCK_STREAM)

    return nsutil.call_in_netns(netns, make)


async def connect_in_netns(
    netns_path: Path | str, port: int, host: str = "127.0.0.1", timeout_s: float = 5.0
) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port`` as seen from inside ``netns_path``."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = await loop.run_in_executor(nsutil.executor(), _socket_in_netns, netns_path, family)
    try:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout_s)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_connection_in_netns(
    netns_path: Path | str,
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout_s: float = 5.0,
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like :func:`asyncio.open_connection` but connecting from inside ``netns_path``."""
    sock = await connect_in_netns(netns_path, port, host, timeout_s)
    return await asyncio.open_connection(sock=sock, limit=limit)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then half-close ``writer``; connection errors end it."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class LoopbackProxy:
    """Listen on ``listen_host:listen_port`` (0 = any free port) and forward to ``port`` in the netns.

    ``async with LoopbackProxy(netns, 8080) as proxy: ... proxy.port ...``
    """

    def __init__(
        self,
        netns_path: Path | str,
        port: int,
        *,
        upstream_host: str = "127.0.0.1",
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.netns_path = Path(netns_path)
        self.upstream_port = port
        self.upstream_host = upstream_host
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeFailure("proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        return self

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        up_w: asyncio.StreamWriter | None = None
        try:
            try:
                up_r, up_w = await open_connection_in_netns(
                    self.netns_path, self.upstream_port, self.upstream_host, timeout_s=self.connect_timeout_s
                )
            except (OSError, TimeoutError):
                return
            for writer in (client_w, up_w):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
        except asyncio.CancelledError:
            # close() cancels open splices; end quietly (asyncio's server callback would log a cancelled task)
            pass
        finally:
            for w in (client_w, up_w):
                if w is not None:
                    w.close()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoopbackProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
