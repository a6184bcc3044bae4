"""Addresses on the host loopback labelled ``lo:faas`` (direct function addresses), through iproute2's ``ip``.

Only addresses inside ``127.0.0.0/8`` are ever touched, and only as ``/32`` with the label
``lo:faas``, so the host's own ``127.0.0.1/8`` and anything another tool put on ``lo`` stay alone.
Blocking (one short ``ip`` process per call: async code calls these through ``asyncio.to_thread``).

Why ``ip`` and not pyroute2 (which :mod:`faasd.runtime.network` uses for egress links): importing pyroute2
loads its whole package (NDB, IPDB, conntrack, ...), 10.3 MB of resident memory in the daemon, which every
daemon paid at start for these four calls; the idle daemon's budget is 100 MB (``bench/daemon_rss.py``).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

from faasd.errors import InvalidInputError, RuntimeFailure

LABEL = "lo:faas"
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
IP_TIMEOUT_S = 10.0


def check_loopback(address: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise InvalidInputError(f"{address!r} is not an IPv4 address") from None
    if ip not in LOOPBACK_NET or ip == ipaddress.IPv4Address("127.0.0.1"):
        raise InvalidInputError(f"{address} is not a direct address: it must be inside 127.0.0.0/8")
    return ip


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ip", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=IP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise RuntimeFailure("the `ip` command is not installed: install iproute2") from None
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"`ip {' '.join(args)}` did not answer within {IP_TIMEOUT_S:.0f} s") from None


def _lo_addresses() -> list[dict[str, Any]]:
    """The IPv4 addresses of ``lo`` as ``ip -j`` gives them (``local``, ``prefixlen``, ``label``, ...)."""
    res = _ip("-4", "-j", "addr", "show", "dev", "lo")
    if res.returncode != 0:
        raise RuntimeFailure(f"cannot list the addresses of lo: {res.stderr.strip() or res.returncode}")
    try:
        links = json.loads(res.stdout or "[]")
    except ValueError as exc:
        raise RuntimeFailure(f"cannot read `ip -j addr show dev lo`: {exc}") from exc
    if not links:
        raise RuntimeFailure("the host has no loopback interface 'lo'")
    return [a for link in links for a in link.get("addr_info", []) if a.get("family") == "inet"]


def list_labelled() -> set[str]:
    """Every IPv4 address on ``lo`` with the label ``lo:faas``."""
    return {str(a["local"]) for a in _lo_addresses() if a.get("label") == LABEL}


def list_all() -> set[str]:
    """Every IPv4 address on ``lo`` (any label): a direct address must not collide with one of them."""
    return {str(a["local"]) for a in _lo_addresses()}


def add(address: str) -> bool:
    """Add ``address/32`` labelled ``lo:faas`` to ``lo``; False if it was already there."""
    check_loopback(address)
    res = _ip("addr", "add", f"{address}/32", "dev", "lo", "label", LABEL, "scope", "host")
    if res.returncode == 0:
        return True
    if address in list_all():  # "Address already assigned" (or added meanwhile)
        return False
    raise RuntimeFailure(f"cannot add {address}/32 to lo: {res.stderr.strip() or res.returncode}")


def remove(address: str) -> bool:
    """Remove ``address/32`` from ``lo`` if it carries the ``lo:faas`` label; False if it was not there."""
    check_loopback(address)
    if address not in list_labelled():
        return False
    res = _ip("addr", "del", f"{address}/32", "dev", "lo")
    if res.returncode == 0:
        return True
    if address not in list_labelled():  # "Address not found": removed meanwhile
        return False
    raise RuntimeFailure(f"cannot remove {address}/32 from lo: {res.stderr.strip() or res.returncode}")
