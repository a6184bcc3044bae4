"""Direct function addresses, runtime side: the listening socket and its hand-over into a sandbox.

The daemon binds one TCP listening socket per function on its direct address (host network
namespace) and passes it to every worker of that function over SCM_RIGHTS: before the sandbox's
process starts, the host listens on ``<io dir>/direct.sock`` (the io dir is bind-mounted at
``/run/faasd-io``); the Python agent (or ``faasd-init`` in front of the Node agent) connects there once
at start-up and receives the descriptor. The socket keeps belonging to the host's network namespace,
so the sandbox gets no network of its own: accepting on that socket is the only way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from faasd.errors import ConflictError, RuntimeFailure
from faasd.runtime.models import IO_DIR_IN_CONTAINER

HANDOVER_SOCKET_NAME = "direct.sock"
HANDOVER_SOCKET_IN_CONTAINER = f"{IO_DIR_IN_CONTAINER}/{HANDOVER_SOCKET_NAME}"
LISTEN_BACKLOG = 4096


def bind_listener(address: str, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``address:port`` (SO_REUSEADDR, TCP_NODELAY on accepted
    connections is left to the agent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE
            raise ConflictError(f"{address}:{port} is already in use by another program") from exc
        raise RuntimeFailure(f"cannot listen on {address}:{port}: {exc}") from exc
    return sock


class Handover:
    """One sandbox's hand-over point: ``<io dir>/direct.sock``, serving ``listener`` to one connection."""

    def __init__(self, io_dir: Path, listener: socket.socket, owner: tuple[int, int] | None = None) -> None:
        self.path = Path(io_dir) / HANDOVER_SOCKET_NAME
        self._listener = listener
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._sock.bind(str(self.path))
            if owner is not None:  # the sandbox's user connects: 0600 owned by that user
                os.chown(self.path, *owner)
            os.chmod(self.path, 0o600)
            self._sock.listen(1)
            self._sock.setblocking(False)
        except OSError as exc:
            self.close()
            raise RuntimeFailure(f"cannot prepare the socket hand-over at {self.path}: {exc}") from exc

    async def send(self, *, keep: bool = False) -> socket.socket | None:
        """Wait for the sandbox's process to connect, then pass the listening socket (SCM_RIGHTS).

        With ``keep`` the byte sent is ``G`` and the connection is returned open: the Python agent keeps
        it as its gateway channel (:mod:`faasd.runtime.gateway_channel`); otherwise ``L`` and closed."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._sock)
        try:
            socket.send_fds(conn, [b"G" if keep else b"L"], [self._listener.fileno()])
        except BaseException:
            conn.close()
            raise
        self.close()
        if keep:
            return conn
        conn.close()
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
