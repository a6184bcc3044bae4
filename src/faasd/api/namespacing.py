"""The namespace a request acts in: the key's (a namespaced key), or the one it names (``?namespace=``,
a body's ``namespace``), or the default one; lists of an unbound key that names none show every namespace.

Objects of a namespace the key may not see answer 404 like absent ones; naming such a namespace is 403."""

from __future__ import annotations

from fastapi import Request

from faasd.errors import ForbiddenError, InvalidInputError, NotFoundError
from faasd.platform.core import Platform
from faasd.platform.keys import KeyInfo
from faasd.platform.namespaces import NAMESPACE_LABEL, Access, check_namespace


def _platform(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def _requested(request: Request, body_namespace: str | None) -> str | None:
    query = request.query_params.get("namespace") or None
    if query and body_namespace and query != body_namespace:
        raise InvalidInputError(
            f"the body names namespace {body_namespace!r} and the query {query!r}; give one",
            namespace=body_namespace,
        )
    ns = body_namespace or query
    return check_namespace(ns) if ns else None


def target_namespace(request: Request, key: KeyInfo, body_namespace: str | None = None) -> str:
    """The namespace a request on one object acts in (existing; 403 for another tenant's)."""
    ns = key.access.target(_requested(request, body_namespace))
    return _platform(request).namespaces.require(ns)


def list_namespace(request: Request, key: KeyInfo) -> str | None:
    """The namespace a list shows (None: every namespace)."""
    ns = key.access.scope(_requested(request, None))
    if ns is not None:
        _platform(request).namespaces.require(ns)
    return ns


def require_visible(key: KeyInfo, namespace: str, not_found: NotFoundError) -> None:
    """Raise ``not_found`` (the error an absent object gives) for an object the key may not see."""
    if not key.access.sees(namespace):
        raise not_found


def visible_ref(request: Request, key: KeyInfo, ref: str, what: str) -> str:
    """The namespace of a snapshot, instance or sandbox id the key may see; else the 404 of an absent
    ``what`` (same message either way)."""
    requested = _requested(request, None)
    if requested is None:
        return _platform(request).tenancy.visible(key.access, ref, what)
    key.access.target(requested)  # 403 for a namespace the key may not act in
    return _platform(request).tenancy.visible(Access(requested), ref, what)


def own_labels(labels: dict[str, str] | None, namespace: str) -> dict[str, str]:
    """A snapshot's labels with its namespace set; a caller cannot set the namespace label itself."""
    labels = dict(labels or {})
    if NAMESPACE_LABEL in labels:
        raise InvalidInputError(
            f"label {NAMESPACE_LABEL!r} is reserved: a snapshot belongs to the namespace of what it was "
            "taken of",
            label=NAMESPACE_LABEL,
        )
    labels[NAMESPACE_LABEL] = namespace
    return labels


def require_unbound(key: KeyInfo, what: str) -> None:
    """403 for a namespaced key on a feature whose state is shared by every namespace (e.g. the execute
    result cache, warm execute sandboxes, daemon-wide metrics)."""
    if key.namespace is not None:
        raise ForbiddenError(
            f"{what} is shared by every namespace, so a key bound to namespace {key.namespace!r} may not use "
            "it; use a key without a namespace",
            key_namespace=key.namespace,
        )
