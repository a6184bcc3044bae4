"""API keys: random, shown once, stored as SHA-256; scopes admin ⊇ deploy ⊇ invoke; token-bucket limits."""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from faasd.errors import AuthError, ForbiddenError, InvalidInputError, NotFoundError
from faasd.platform.errors import RateLimitedError
from faasd.platform.namespaces import Access, NamespaceService
from faasd.state import ApiKey, Database
from faasd.state.models import utcnow

SCOPES = ("admin", "deploy", "invoke")
_IMPLIES = {"admin": {"admin", "deploy", "invoke"}, "deploy": {"deploy", "invoke"}, "invoke": {"invoke"}}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def effective_scopes(scopes: list[str]) -> set[str]:
    out: set[str] = set()
    for s in scopes:
        out |= _IMPLIES.get(s, set())
    return out


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scopes: frozenset[str]
    rate_limit_rps: float | None
    burst: int | None
    namespace: str | None = None
    """The one namespace this key acts in; None: every namespace."""

    @property
    def access(self) -> Access:
        return Access(self.namespace)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ForbiddenError(
                f"API key {self.name!r} lacks the {scope!r} scope needed here; use a key with that scope",
                required=scope,
                scopes=sorted(self.scopes),
            )


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: type[time.struct_time] | None = None) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now: float) -> float:
        """Take one token; return 0 if granted, else seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: KeyInfo, now: float | None = None) -> None:
        if key.rate_limit_rps is None or key.rate_limit_rps <= 0:
            return
        burst = key.burst or max(1, math.ceil(2 * key.rate_limit_rps))
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._buckets.get(key.id)
            if b is None or b.rate != key.rate_limit_rps or b.capacity != burst:
                b = self._buckets[key.id] = TokenBucket(key.rate_limit_rps, burst)
                b.stamp = now
            wait = b.take(now)
        if wait > 0:
            raise RateLimitedError(
                f"API key {key.name!r} exceeded its rate limit of {key.rate_limit_rps:g} request(s)/s; "
                f"retry in {wait:.2f} s",
                retry_after_s=wait,
            )

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._buckets.pop(key_id, None)


class ApiKeyService:
    def __init__(self, db: Database, namespaces: NamespaceService | None = None) -> None:
        self.db = db
        self.namespaces = namespaces
        self._cache: dict[str, tuple[KeyInfo, float]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        scopes: list[str],
        rate_limit_rps: float | None = None,
        burst: int | None = None,
        namespace: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key (and its plaintext, shown once). ``namespace``: the key acts in that namespace only
        (its objects; others' are invisible to it); None: in every namespace. Admin keys manage keys and
        namespaces for everyone, so they cannot be bound to one."""
        if not name or len(name) > 128:
            raise InvalidInputError("key name must be 1-128 characters")
        if not scopes or any(s not in SCOPES for s in scopes):
            raise InvalidInputError(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}")
        if rate_limit_rps is not None and rate_limit_rps <= 0:
            raise InvalidInputError("rate_limit_rps must be positive (or null for unlimited)")
        if burst is not None and burst < 1:
            raise InvalidInputError("burst must be at least 1")
        if namespace is not None:
            if "admin" in scopes:
                raise InvalidInputError(
                    "an admin key spans every namespace and cannot be bound to one; give a namespaced key "
                    "the 'deploy' or 'invoke' scope",
                    namespace=namespace,
                )
            if self.namespaces is not None:
                self.namespaces.require(namespace)
        key_id = secrets.token_hex(6)
        token = f"fdk_{key_id}_{secrets.token_urlsafe(32)}"
        with self.db.session() as s:
            row = ApiKey(
                id=key_id,
                name=name,
                key_hash=_hash(token),
                scopes=sorted(set(scopes)),
                rate_limit_rps=rate_limit_rps,
                burst=burst,
                namespace=namespace,
            )
            s.add(row)
            s.flush()
            s.refresh(row)
        return row, token

    def list(self, namespace: str | None = None) -> list[ApiKey]:
        """Every key, or (``namespace``) the keys bound to that namespace."""
        with self.db.session() as s:
            q = select(ApiKey)
            if namespace is not None:
                q = q.where(ApiKey.namespace == namespace)
            return list(s.scalars(q.order_by(ApiKey.created_at)))

    def delete(self, key_id: str) -> None:
        with self.db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(f"API key {key_id!r} does not exist", id=key_id)
            s.delete(row)
        with self._lock:
            self._cache = {h: v for h, v in self._cache.items() if v[0].id != key_id}

    def verify(self, token: str) -> KeyInfo:
        h = _hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(h)
        if hit is not None and now - hit[1] < 5.0:
            return hit[0]
        with self.db.session() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_hash == h)).first()
            if row is None:
                raise AuthError("invalid API key; check the key or create one with an admin key")
            info = KeyInfo(
                row.id,
                row.name,
                frozenset(effective_scopes(list(row.scopes))),
                row.rate_limit_rps,
                row.burst,
                row.namespace,
            )
            last: datetime | None = row.last_used_at
            if last is None or (utcnow() - last).total_seconds() > 60:
                row.last_used_at = utcnow()
        with self._lock:
            self._cache[h] = (info, now)
        return info

    def bootstrap_admin(self, path: Path) -> str | None:
        """On first start (no keys at all) create an admin key and write it to ``path`` (0600).

        Returns the token when one was created, else None."""
        with self.db.session() as s:
            if s.scalars(select(ApiKey).limit(1)).first() is not None:
                return None
        _row, token = self.create("bootstrap-admin", ["admin"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return token
