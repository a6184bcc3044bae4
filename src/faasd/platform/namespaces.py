"""Namespaces (tenants): names, how objects of a namespace are identified, and the namespace registry.

A namespace owns functions, secrets, snapshots, instances, restored sandboxes, executions and jobs. Its
name follows DNS-label rules, like OpenFaaS's. Everything created without one, and every row written
before namespaces existed, is in :data:`DEFAULT_NAMESPACE` (``openfaas-fn``, OpenFaaS's default).

Ids: function names are unique per namespace. A function's id (the primary key of its record, its pool,
its executions, log lines and snapshots) is its name in the default namespace and ``<name>.<namespace>``
in any other: function names hold no dot, so the id is unambiguous, and it is the address OpenFaaS
gives the function (``/function/<name>.<namespace>``). Secrets: ``<namespace>/<name>`` (secret names may
hold dots, never a slash). So records written before namespaces keep their ids.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select

from faasd.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from faasd.state import DEFAULT_NAMESPACE, Database, Namespace
from faasd.state.models import KEY_LENGTH, SECRET_KEY_LENGTH

NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAMESPACE_LABEL = "faasd.namespace"
"""Label of a snapshot (in the snapshot store's metadata) naming the namespace that owns it."""

__all__ = [
    "DEFAULT_NAMESPACE",
    "NAMESPACE_LABEL",
    "Access",
    "NamespaceService",
    "Quotas",
    "check_id_length",
    "check_namespace",
    "function_id",
    "namespace_of_function_id",
    "parse_function_address",
    "secret_id",
    "split_function_id",
    "split_secret_id",
]


def check_namespace(name: str) -> str:
    """``name`` if it is a valid namespace name, else :class:`InvalidInputError` (400)."""
    if not isinstance(name, str) or not NAMESPACE_RE.match(name):
        raise InvalidInputError(
            f"namespace name {name!r} is invalid: use 1-63 lowercase letters, digits and '-', starting and "
            "ending with a letter or digit (a DNS label)",
            namespace=name,
        )
    return name


def function_id(name: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The id of function ``name`` in ``namespace`` (the name itself in the default namespace).

    A name holding a dot names no function (function names have none): 404, so that no name can reach
    into another namespace through the id scheme."""
    if "." in name:
        raise NotFoundError(f"function {name!r} does not exist", name=name)
    return name if namespace == DEFAULT_NAMESPACE else f"{name}.{namespace}"


def check_id_length(name: str, namespace: str, what: str = "function") -> None:
    """Refuse (400) a new function or secret whose id would not fit its column: outside the default
    namespace, name and namespace share the id (``name.namespace`` / ``namespace/name``)."""
    ident = function_id(name, namespace) if what == "function" else secret_id(name, namespace)
    limit = KEY_LENGTH if what == "function" else SECRET_KEY_LENGTH
    if len(ident) > limit:
        raise InvalidInputError(
            f"{what} name {name!r} is too long for namespace {namespace!r}: outside the default namespace a "
            f"{what} is stored as {ident[:20]!r}..., and name and namespace together may have at most "
            f"{limit - 1} characters; use a shorter name",
            name=name,
            namespace=namespace,
        )


def split_function_id(fid: str) -> tuple[str, str]:
    """``(name, namespace)`` of a function id."""
    name, dot, namespace = fid.partition(".")
    return (name, namespace) if dot else (name, DEFAULT_NAMESPACE)


def namespace_of_function_id(fid: str) -> str:
    return split_function_id(fid)[1]


def parse_function_address(address: str) -> tuple[str, str]:
    """``(name, namespace)`` of an OpenFaaS address ``name`` or ``name.namespace``."""
    return split_function_id(address)


def secret_id(name: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The id of secret ``name`` in ``namespace`` (a name holding ``/`` names no secret: 404)."""
    if "/" in name:
        raise NotFoundError(f"secret {name!r} does not exist", name=name)
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


def split_secret_id(sid: str) -> tuple[str, str]:
    namespace, slash, name = sid.partition("/")
    return (name, namespace) if slash else (sid, DEFAULT_NAMESPACE)


@dataclass(frozen=True)
class Access:
    """Which namespaces a caller (an API key) may act in: ``bound`` only, or every one (``bound`` None:
    keys without a namespace, among them every key made before namespaces, and the bootstrap admin key).

    Objects of namespaces a caller may not see are answered as *absent* (404, missing from lists), never
    403, so a key learns nothing about other tenants; asking for another namespace by name is a 403."""

    bound: str | None = None

    def target(self, requested: str | None = None) -> str:
        """The namespace a request on one object (read, create, invoke, delete) acts in."""
        if self.bound is not None:
            if requested and requested != self.bound:
                raise ForbiddenError(
                    f"this API key is bound to namespace {self.bound!r} and may not act in namespace "
                    f"{requested!r}; use a key of that namespace",
                    namespace=requested,
                    key_namespace=self.bound,
                )
            return self.bound
        return requested or DEFAULT_NAMESPACE

    def scope(self, requested: str | None = None) -> str | None:
        """The namespace a list shows; None: every namespace (an unbound key that named none)."""
        if self.bound is not None:
            return self.target(requested)
        return requested or None

    def sees(self, namespace: str) -> bool:
        return self.bound is None or namespace == self.bound


EVERYTHING = Access(None)


@dataclass(frozen=True)
class Quotas:
    """Bounds of one namespace (None: unlimited). What each counts: :mod:`faasd.platform.quotas`."""

    max_sandboxes: int | None = None
    max_memory_mb: int | None = None
    max_disk_mb: int | None = None
    max_snapshots: int | None = None

    @classmethod
    def of(cls, row: Namespace) -> Quotas:
        return cls(row.max_sandboxes, row.max_memory_mb, row.max_disk_mb, row.max_snapshots)

    def as_dict(self) -> dict[str, int | None]:
        return {
            "max_sandboxes": self.max_sandboxes,
            "max_memory_mb": self.max_memory_mb,
            "max_disk_mb": self.max_disk_mb,
            "max_snapshots": self.max_snapshots,
        }


QUOTA_FIELDS = tuple(Quotas().as_dict())
Contents = Callable[[str], Mapping[str, builtins.list[str]]]
"""What a namespace holds, by kind (``functions``: [ids], ...): a namespace is deleted only when empty."""


class NamespaceService:
    """The registry of namespaces and their quotas (table ``namespaces``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._quotas: dict[str, Quotas] = {}
        """Quotas read so far (every worker start checks them: no database session on that path; this
        service is the only writer, and drops an entry whenever it changes one)."""
        self.ensure_default()
        with self.db.session() as s:
            self._quotas.update((row.name, Quotas.of(row)) for row in s.scalars(select(Namespace)))

    def ensure_default(self) -> None:
        with self.db.session() as s:
            if s.get(Namespace, DEFAULT_NAMESPACE) is None:
                s.add(Namespace(name=DEFAULT_NAMESPACE))

    def create(
        self, name: str, quotas: Quotas | None = None, labels: dict[str, str] | None = None
    ) -> Namespace:
        check_namespace(name)
        _check_quotas(quotas or Quotas())
        with self.db.session() as s:
            if s.get(Namespace, name) is not None:
                raise ConflictError(f"namespace {name!r} already exists", namespace=name)
            row = Namespace(name=name, labels=dict(labels or {}), **(quotas or Quotas()).as_dict())
            s.add(row)
            self._quotas[name] = quotas or Quotas()
            s.flush()
            s.refresh(row)
            return row

    def get(self, name: str) -> Namespace:
        with self.db.session() as s:
            row = s.get(Namespace, name)
            if row is None:
                raise NotFoundError(
                    f"namespace {name!r} does not exist; an admin creates it (faas namespace create {name})",
                    namespace=name,
                )
            return row

    def require(self, name: str) -> str:
        """``name`` if the namespace exists, else a 404 saying so."""
        if name != DEFAULT_NAMESPACE:
            self.get(name)
        return name

    def list(self) -> builtins.list[Namespace]:
        with self.db.session() as s:
            return list(s.scalars(select(Namespace).order_by(Namespace.name)))

    def quotas(self, name: str) -> Quotas:
        cached = self._quotas.get(name)
        if cached is not None:
            return cached
        with self.db.session() as s:
            row = s.get(Namespace, name)
            quotas = Quotas.of(row) if row is not None else Quotas()
        if row is not None:
            self._quotas[name] = quotas
        return quotas

    def set_quotas(self, name: str, changes: Mapping[str, int | None]) -> Namespace:
        """Change some quotas (None: unlimited). Lowering one below the current use is allowed: only
        new sandboxes, snapshots and disks are refused until use is back under it."""
        unknown = set(changes) - set(QUOTA_FIELDS)
        if unknown:
            raise InvalidInputError(f"unknown quota(s) {sorted(unknown)}; quotas are {list(QUOTA_FIELDS)}")
        with self.db.session() as s:
            row = s.get(Namespace, name)
            if row is None:
                raise NotFoundError(f"namespace {name!r} does not exist", namespace=name)
            merged = {**Quotas.of(row).as_dict(), **changes}
            _check_quotas(Quotas(**merged))
            for k, v in changes.items():
                setattr(row, k, v)
            self._quotas.pop(name, None)
            s.flush()
            s.refresh(row)
            return row

    def delete(self, name: str, contents: Contents) -> None:
        """Delete an empty namespace; 409 naming what it still holds otherwise."""
        if name == DEFAULT_NAMESPACE:
            raise ConflictError(f"the default namespace {name!r} cannot be deleted", namespace=name)
        self.get(name)
        held = {kind: ids for kind, ids in contents(name).items() if ids}
        if held:
            what = ", ".join(f"{len(ids)} {kind}" for kind, ids in held.items())
            raise ConflictError(
                f"namespace {name!r} is not empty ({what}); delete its objects first",
                namespace=name,
                contents=held,
            )
        with self.db.session() as s:
            row = s.get(Namespace, name)
            if row is not None:
                s.delete(row)
        self._quotas.pop(name, None)


def _check_quotas(q: Quotas) -> None:
    for k, v in q.as_dict().items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise InvalidInputError(f"quota {k} must be a whole number >= 0 (or null: unlimited), got {v!r}")
