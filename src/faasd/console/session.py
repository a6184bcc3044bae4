"""Console sign-in sessions: a server-side table of random tokens kept in an HttpOnly, SameSite=Strict
cookie, and the CSRF rules for cookie-authenticated requests.

A session keeps the API key it was opened with (in memory only) and every request re-verifies that key,
so deleting the key ends its sessions and its scopes and rate limit apply unchanged. State-changing
requests (anything but GET/HEAD/OPTIONS) must carry the session's CSRF token in ``X-CSRF-Token`` (the
console reads it from ``GET /ui/api/session``; a cross-site page can neither read it nor send the cookie)
and, when the browser sends one, an ``Origin`` whose host is the request's ``Host``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from faasd.errors import ForbiddenError

COOKIE = "faasd_console"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_TTL_S = 12 * 3600.0
DEFAULT_IDLE_S = 2 * 3600.0
MAX_SESSIONS = 10000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class ConsoleSession:
    api_key: str
    """The API key the session was opened with; re-verified on every request (never sent back)."""
    key_id: str
    key_name: str
    scopes: frozenset[str]
    csrf: str
    created: float
    last_seen: float = field(default=0.0)


class SessionStore:
    """In-memory session table (sessions end with the daemon; signing in again is one paste)."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        idle_s: float = DEFAULT_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self._clock = clock
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self, api_key: str, key_id: str, key_name: str, scopes: frozenset[str]
    ) -> tuple[str, ConsoleSession]:
        """A new session; returns the cookie token (only its hash is stored) and the session."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        sess = ConsoleSession(api_key, key_id, key_name, scopes, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:  # drop the least recently used
                oldest = min(self._sessions, key=lambda h: self._sessions[h].last_seen)
                del self._sessions[oldest]
            self._sessions[_digest(token)] = sess
        return token, sess

    def get(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        now = self._clock()
        h = _digest(token)
        with self._lock:
            sess = self._sessions.get(h)
            if sess is None:
                return None
            if self._expired(sess, now):
                del self._sessions[h]
                return None
            sess.last_seen = now
            return sess

    def delete(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            return self._sessions.pop(_digest(token), None) is not None

    def revoke_key(self, key_id: str) -> int:
        """End every session opened with the key ``key_id``; returns how many."""
        with self._lock:
            gone = [h for h, s in self._sessions.items() if s.key_id == key_id]
            for h in gone:
                del self._sessions[h]
        return len(gone)

    def _expired(self, sess: ConsoleSession, now: float) -> bool:
        return now - sess.created > self.ttl_s or now - sess.last_seen > self.idle_s

    def _expire(self, now: float) -> None:
        for h in [h for h, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[h]


def check_csrf(method: str, headers: Mapping[str, str], sess: ConsoleSession) -> None:
    """Refuse a cookie-authenticated state-changing request without the session's CSRF token or from
    another origin. ``headers`` keys are lower-case (Starlette's Headers are case-insensitive)."""
    if method.upper() in SAFE_METHODS:
        return
    check_origin(headers)
    sent = headers.get(CSRF_HEADER) or ""
    if not sent or not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
        raise ForbiddenError(
            "missing or wrong CSRF token (X-CSRF-Token) on a console request; reload the console page",
            reason="csrf",
        )


def check_origin(headers: Mapping[str, str]) -> None:
    """Refuse requests a browser marks as cross-site, and an ``Origin`` that is not this host."""
    if (headers.get("sec-fetch-site") or "").lower() == "cross-site":
        raise ForbiddenError("cross-site request refused by the console", reason="origin")
    origin = headers.get("origin")
    if origin is None:
        return
    host = (headers.get("host") or "").lower()
    if origin == "null" or urlsplit(origin).netloc.lower() != host:
        raise ForbiddenError(
            f"request from origin {origin!r} refused: the console only accepts its own origin",
            reason="origin",
        )
