"""Direct function addresses: each eligible function owns an address on the host loopback.

The address comes from a pool inside ``127.0.0.0/8`` (``FAASD_DIRECT_POOL``, default
``127.77.0.0/16``), is added to ``lo`` as ``/32`` with the label ``lo:faas`` and the daemon listens on
``address:FAASD_DIRECT_PORT`` (default 80). That one listening socket is shared by all warm workers
of the function: each gets it over SCM_RIGHTS at start-up (:mod:`faasd.runtime.direct`) and whichever
agent accepts first serves the connection, with no proxy in between.

The registry is the ``function_addresses`` table: a function keeps its address across daemon restarts
(re-added at start-up), gives it back when deleted (or when it stops being eligible), and the daemon
removes every ``lo:faas`` address from ``lo`` when it stops. Start-up reconciliation also removes
``lo:faas`` addresses inside the pool that no current function owns (left by a daemon that crashed).

Eligible: mode ``cached`` and runtime ``python`` or ``node`` (the agents serve HTTP on the socket) or
``http`` (``faasd-init`` relays the socket's connections to the server's port inside the sandbox).
Restored workers (``checkpointed``/``branched``) do not get the socket: it belongs to the host's
network namespace and must not be inside a checkpoint (a cached worker being snapshotted gives its copy
back first, see ``Worker.unlisten``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select

from faasd.errors import CapacityError, FaasdError, InvalidInputError
from faasd.platform.functions import isolation_of
from faasd.runtime import loaddr
from faasd.runtime.direct import bind_listener
from faasd.state import Database, Function, FunctionAddress

log = logging.getLogger(__name__)

DIRECT_RUNTIMES = ("python", "node", "http")
DIRECT_MODES = ("cached",)


class LoopbackAddresses(Protocol):
    """How addresses get on and off ``lo`` (real: :mod:`faasd.runtime.loaddr`; unit tests: a double)."""

    def add(self, address: str) -> bool: ...

    def remove(self, address: str) -> bool: ...

    def list_labelled(self) -> set[str]: ...

    def list_all(self) -> set[str]: ...


class _IpCommand:
    def add(self, address: str) -> bool:
        return loaddr.add(address)

    def remove(self, address: str) -> bool:
        return loaddr.remove(address)

    def list_labelled(self) -> set[str]:
        return loaddr.list_labelled()

    def list_all(self) -> set[str]:
        return loaddr.list_all()


def parse_pool(pool: str) -> ipaddress.IPv4Network:
    """The pool network; refuses anything outside ``127.0.0.0/8`` (with the setting's name)."""
    try:
        net = ipaddress.IPv4Network(pool.strip(), strict=False)
    except ValueError as exc:
        raise InvalidInputError(f"FAASD_DIRECT_POOL={pool!r} is not an IPv4 network: {exc}") from None
    if not net.subnet_of(loaddr.LOOPBACK_NET):
        raise InvalidInputError(
            f"FAASD_DIRECT_POOL={pool!r} lies outside 127.0.0.0/8; direct function addresses live on the "
            "host loopback only: use a range such as 127.77.0.0/16 (or an empty value to turn them off)"
        )
    if net.num_addresses < 4:
        raise InvalidInputError(f"FAASD_DIRECT_POOL={pool!r} is too small; use at least a /30")
    return net


def eligible(fn: Function) -> bool:
    """Cached python/node/http functions under runc: gVisor sandboxes have their own network stack, so a
    host socket handed in would not be served by the host kernel; they are reached through the gateway."""
    return fn.mode in DIRECT_MODES and fn.runtime in DIRECT_RUNTIMES and isolation_of(fn) == "runc"


@dataclass
class _Held:
    address: str
    listener: socket.socket | None = None


class DirectAddresses:
    def __init__(self, db: Database, pool: str, port: int, *, lo: LoopbackAddresses | None = None) -> None:
        self.db = db
        self.pool = parse_pool(pool)
        self.port = port
        self.lo: LoopbackAddresses = lo or _IpCommand()
        self._held: dict[str, _Held] = {}
        with db.session() as s:
            for row in s.scalars(select(FunctionAddress)):
                self._held[row.function] = _Held(row.address)
        self._lock = asyncio.Lock()

    # -- queries (no I/O) --------------------------------------------------------------------------
    def address_of(self, name: str) -> str | None:
        held = self._held.get(name)
        return held.address if held is not None else None

    def url_of(self, name: str) -> str | None:
        address = self.address_of(name)
        if address is None:
            return None
        return f"http://{address}/" if self.port == 80 else f"http://{address}:{self.port}/"

    def listener(self, name: str) -> socket.socket | None:
        held = self._held.get(name)
        return held.listener if held is not None else None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def assign(self, fn: Function) -> str | None:
        """Give ``fn`` its address (the one it had, or a free one), put it on ``lo`` and listen on it.
        A function that is not eligible gives its address back; returns the address or None."""
        if not eligible(fn):
            await self.release(fn.name)
            return None
        async with self._lock:
            held = self._held.get(fn.name)
            if held is None:
                held = _Held(await asyncio.to_thread(self._allocate, fn.name))
                self._held[fn.name] = held
            if held.listener is None:
                await asyncio.to_thread(self.lo.add, held.address)
                try:
                    held.listener = bind_listener(held.address, self.port)
                except FaasdError:
                    await asyncio.to_thread(self.lo.remove, held.address)
                    raise
            return held.address

    def _allocate(self, name: str) -> str:
        taken = {h.address for h in self._held.values()} | self.lo.list_all()
        for ip in self.pool.hosts():
            address = str(ip)
            if address not in taken and address != "127.0.0.1":
                with self.db.session() as s:
                    s.add(FunctionAddress(function=name, address=address))
                return address
        raise CapacityError(
            f"the direct address pool {self.pool} is exhausted; raise FAASD_DIRECT_POOL's size",
            retry_after_s=60.0,
        )

    async def release(self, name: str) -> None:
        """The function is gone (or no longer eligible): stop listening, take the address off ``lo`` and
        out of the registry."""
        async with self._lock:
            held = self._held.pop(name, None)
            if held is None:
                return
            self._close(held)
            await asyncio.to_thread(self._forget, name, held.address)

    def _forget(self, name: str, address: str) -> None:
        self.lo.remove(address)
        with self.db.session() as s:
            s.execute(delete(FunctionAddress).where(FunctionAddress.function == name))

    @staticmethod
    def _close(held: _Held) -> None:
        if held.listener is not None:
            with contextlib.suppress(OSError):
                held.listener.close()
            held.listener = None

    async def reconcile(self, functions: list[Function]) -> list[str]:
        """Start-up: registry rows of functions that are gone (or not eligible) are dropped, and
        ``lo:faas`` addresses inside the pool that no function owns are removed. Returns those removed."""
        by_name = {fn.name: fn for fn in functions}
        for name in [n for n in self._held if n not in by_name or not eligible(by_name[n])]:
            await self.release(name)
        owned = {h.address for h in self._held.values()}
        stale = [
            a
            for a in await asyncio.to_thread(self.lo.list_labelled)
            if ipaddress.IPv4Address(a) in self.pool and a not in owned
        ]
        for a in stale:
            await asyncio.to_thread(self.lo.remove, a)
        if stale:
            log.info("removed %d stale direct address(es) from lo: %s", len(stale), stale)
        return stale

    async def close(self) -> None:
        """Daemon shutdown: stop listening and take every address off ``lo`` (the registry keeps them:
        each function gets its address back at the next start)."""
        async with self._lock:
            for held in self._held.values():
                if held.listener is not None:
                    self._close(held)
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self.lo.remove, held.address)
