"""Addresses on the host loopback labelled ``lo:faas`` (direct function addresses), via netlink.

Only addresses inside ``127.0.0.0/8`` are ever touched, and only as ``/32`` with the label
``lo:faas``, so the host's own ``127.0.0.1/8`` and anything another tool put on ``lo`` stay alone.
Blocking (netlink round trips of well under a millisecond); pyroute2's synchronous API cannot run on a
thread with a running event loop, so there the work moves to a short-lived thread (async code should
call these through ``asyncio.to_thread`` anyway).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from faasd.errors import InvalidInputError, RuntimeFailure

T = TypeVar("T")

LABEL = "lo:faas"
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")


def check_loopback(address: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise InvalidInputError(f"{address!r} is not an IPv4 address") from None
    if ip not in LOOPBACK_NET or ip == ipaddress.IPv4Address("127.0.0.1"):
        raise InvalidInputError(f"{address} is not a direct address: it must be inside 127.0.0.0/8")
    return ip


def _lo_index(ipr: object) -> int:
    idx = ipr.link_lookup(ifname="lo")  # type: ignore[attr-defined]
    if not idx:
        raise RuntimeFailure("the host has no loopback interface 'lo'")
    return int(idx[0])


def _iproute() -> object:
    from pyroute2 import IPRoute

    return IPRoute()


def _off_loop(fn: Callable[[], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def list_labelled() -> set[str]:
    """Every IPv4 address on ``lo`` with the label ``lo:faas``."""
    return _off_loop(_list_labelled)


def list_all() -> set[str]:
    """Every IPv4 address on ``lo`` (any label): a direct address must not collide with one of them."""
    return _off_loop(_list_all)


def add(address: str) -> bool:
    """Add ``address/32`` labelled ``lo:faas`` to ``lo``; False if it was already there."""
    check_loopback(address)
    return _off_loop(lambda: _add(address))


def remove(address: str) -> bool:
    """Remove ``address/32`` from ``lo`` if it carries the ``lo:faas`` label; False if it was not there."""
    check_loopback(address)
    return _off_loop(lambda: _remove(address))


def _list_labelled() -> set[str]:
    with _iproute() as ipr:  # type: ignore[attr-defined]
        out = set()
        for a in ipr.get_addr(family=2, index=_lo_index(ipr)):
            if a.get_attr("IFA_LABEL") == LABEL:
                out.add(str(a.get_attr("IFA_ADDRESS")))
        return out


def _list_all() -> set[str]:
    with _iproute() as ipr:  # type: ignore[attr-defined]
        return {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=2, index=_lo_index(ipr))}


def _add(address: str) -> bool:
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute() as ipr:  # type: ignore[attr-defined]
        try:
            ipr.addr("add", index=_lo_index(ipr), address=address, prefixlen=32, label=LABEL, scope=254)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise RuntimeFailure(f"cannot add {address}/32 to lo: {exc}") from exc
    return True


def _remove(address: str) -> bool:
    if address not in _list_labelled():
        return False
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute() as ipr:  # type: ignore[attr-defined]
        try:
            ipr.addr("del", index=_lo_index(ipr), address=address, prefixlen=32)
        except NetlinkError as exc:
            if exc.code == errno.EADDRNOTAVAIL:
                return False
            raise RuntimeFailure(f"cannot remove {address}/32 from lo: {exc}") from exc
    return True
