"""Secrets: stored in the database (file 0600 for SQLite), mounted read-only into sandboxes at
``/run/secrets/<name>``. Values are never returned by the API."""

from __future__ import annotations

import builtins

from sqlalchemy import select

from faasd.errors import ConflictError, InvalidInputError, NotFoundError
from faasd.platform.functions import SECRET_NAME_RE
from faasd.platform.namespaces import DEFAULT_NAMESPACE, check_id_length, secret_id, split_secret_id
from faasd.state import Database, Function, Secret

MAX_SECRET_BYTES = 512 * 1024


def _check(name: str, value: bytes | None) -> None:
    if not SECRET_NAME_RE.match(name):
        raise InvalidInputError(
            f"secret name {name!r} is invalid: use letters, digits, '.', '_' and '-' (max 253)", name=name
        )
    if value is not None and len(value) > MAX_SECRET_BYTES:
        raise InvalidInputError(f"secret {name!r} is {len(value)} bytes; the limit is {MAX_SECRET_BYTES}")


def display_name(sec: Secret) -> str:
    """The secret's name within its namespace (its record's ``name`` is the id)."""
    return split_secret_id(sec.name)[0]


class SecretService:
    """Secrets per namespace: ``name`` arguments are names within ``namespace`` (default: the default one)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, value: bytes, namespace: str = DEFAULT_NAMESPACE) -> Secret:
        _check(name, value)
        check_id_length(name, namespace, "secret")
        with self.db.session() as s:
            if s.get(Secret, secret_id(name, namespace)) is not None:
                raise ConflictError(f"secret {name!r} already exists; update it with PUT", name=name)
            sec = Secret(name=secret_id(name, namespace), namespace=namespace, value=value)
            s.add(sec)
            s.flush()
            s.refresh(sec)
            return sec

    def update(self, name: str, value: bytes, namespace: str = DEFAULT_NAMESPACE) -> Secret:
        _check(name, value)
        with self.db.session() as s:
            sec = s.get(Secret, secret_id(name, namespace))
            if sec is None:
                raise NotFoundError(f"secret {name!r} does not exist; create it first", name=name)
            sec.value = value
            s.flush()
            s.refresh(sec)
            return sec

    def delete(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        with self.db.session() as s:
            sec = s.get(Secret, secret_id(name, namespace))
            if sec is None:
                raise NotFoundError(f"secret {name!r} does not exist", name=name)
            users = [
                f.name.partition(".")[0]
                for f in s.scalars(select(Function).where(Function.namespace == namespace))
                if name in (f.secrets or [])
            ]
            if users:
                raise ConflictError(
                    f"secret {name!r} is used by function(s) {', '.join(users)}; remove it from them first",
                    functions=users,
                )
            s.delete(sec)

    def list(self, namespace: str | None = None) -> list[Secret]:
        """Every secret, or those of ``namespace``."""
        with self.db.session() as s:
            q = select(Secret)
            if namespace is not None:
                q = q.where(Secret.namespace == namespace)
            return list(s.scalars(q.order_by(Secret.name)))

    def require(self, names: builtins.list[str], namespace: str = DEFAULT_NAMESPACE) -> None:
        """Raise a clear 400 if any of ``names`` does not exist in ``namespace`` (checked at deploy)."""
        with self.db.session() as s:
            missing = [n for n in names if "/" in n or s.get(Secret, secret_id(n, namespace)) is None]
        if missing:
            raise InvalidInputError(
                f"secret(s) {', '.join(missing)} do not exist; create them first (POST /api/v1/secrets)",
                missing=missing,
            )

    def values(self, names: builtins.list[str], namespace: str = DEFAULT_NAMESPACE) -> dict[str, bytes]:
        """The values of ``names`` in ``namespace`` (a function reads only its own namespace's secrets)."""
        with self.db.session() as s:
            out: dict[str, bytes] = {}
            for n in names:
                sec = s.get(Secret, secret_id(n, namespace))
                if sec is None:
                    raise NotFoundError(
                        f"secret {n!r} used by the function no longer exists; recreate it", name=n
                    )
                out[n] = bytes(sec.value)
            return out
