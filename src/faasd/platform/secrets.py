"""Secrets: stored in the database (file 0600 for SQLite), mounted read-only into sandboxes at
``/run/secrets/<name>``. Values are never returned by the API."""

from __future__ import annotations

import builtins

from sqlalchemy import select

from faasd.errors import ConflictError, InvalidInputError, NotFoundError
from faasd.platform.functions import SECRET_NAME_RE
from faasd.state import Database, Function, Secret

MAX_SECRET_BYTES = 512 * 1024


def _check(name: str, value: bytes | None) -> None:
    if not SECRET_NAME_RE.match(name):
        raise InvalidInputError(
            f"secret name {name!r} is invalid: use letters, digits, '.', '_' and '-' (max 253)", name=name
        )
    if value is not None and len(value) > MAX_SECRET_BYTES:
        raise InvalidInputError(f"secret {name!r} is {len(value)} bytes; the limit is {MAX_SECRET_BYTES}")


class SecretService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, value: bytes) -> Secret:
        _check(name, value)
        with self.db.session() as s:
            if s.get(Secret, name) is not None:
                raise ConflictError(f"secret {name!r} already exists; update it with PUT", name=name)
            sec = Secret(name=name, value=value)
            s.add(sec)
            s.flush()
            s.refresh(sec)
            return sec

    def update(self, name: str, value: bytes) -> Secret:
        _check(name, value)
        with self.db.session() as s:
            sec = s.get(Secret, name)
            if sec is None:
                raise NotFoundError(f"secret {name!r} does not exist; create it first", name=name)
            sec.value = value
            s.flush()
            s.refresh(sec)
            return sec

    def delete(self, name: str) -> None:
        with self.db.session() as s:
            sec = s.get(Secret, name)
            if sec is None:
                raise NotFoundError(f"secret {name!r} does not exist", name=name)
            users = [f.name for f in s.scalars(select(Function)) if name in (f.secrets or [])]
            if users:
                raise ConflictError(
                    f"secret {name!r} is used by function(s) {', '.join(users)}; remove it from them first",
                    functions=users,
                )
            s.delete(sec)

    def list(self) -> list[Secret]:
        with self.db.session() as s:
            return list(s.scalars(select(Secret).order_by(Secret.name)))

    def require(self, names: builtins.list[str]) -> None:
        """Raise a clear 400 if any of ``names`` does not exist (checked at deploy time)."""
        with self.db.session() as s:
            missing = [n for n in names if s.get(Secret, n) is None]
        if missing:
            raise InvalidInputError(
                f"secret(s) {', '.join(missing)} do not exist; create them first (POST /api/v1/secrets)",
                missing=missing,
            )

    def values(self, names: builtins.list[str]) -> dict[str, bytes]:
        with self.db.session() as s:
            out: dict[str, bytes] = {}
            for n in names:
                sec = s.get(Secret, n)
                if sec is None:
                    raise NotFoundError(
                        f"secret {n!r} used by the function no longer exists; recreate it", name=n
                    )
                out[n] = bytes(sec.value)
            return out
