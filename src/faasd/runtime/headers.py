"""Which HTTP headers cross a hop: one policy for every place faasd relays HTTP (function workers, the
gateway's answers, instance port proxies).

``HOP_BY_HOP`` are the connection-specific headers of RFC 9110 §7.6.1 (plus the de-facto
``proxy-connection``): never forwarded. The other sets are added by the relays that rebuild framing or
must not leak credentials.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
FRAMING = frozenset({"host", "content-length"})
"""Set again by whoever sends the relayed message."""
CREDENTIALS = frozenset({"authorization", "cookie"})
"""faasd's own credentials (API keys, console sessions): never handed to what runs in a sandbox."""
SERVER_SET = frozenset({"content-length", "server", "date"})
"""Written by the daemon's HTTP server for each answer it sends."""


def relayable(headers: Iterable[tuple[str, str]], drop: frozenset[str] = HOP_BY_HOP) -> list[tuple[str, str]]:
    """``headers`` without the ones named in ``drop`` (case-insensitive)."""
    return [(k, v) for k, v in headers if k.lower() not in drop]
