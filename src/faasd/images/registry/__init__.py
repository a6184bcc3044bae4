"""OCI registries: references, credentials, the distribution-API client, pull and push.

The names below are loaded on first access: the client needs httpx, which the daemon imports only when an
image is really pulled or pushed (``faasd.images.registry.reference`` stays importable on its own).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from faasd.config import Settings

if TYPE_CHECKING:
    from faasd.images.registry.client import RegistryClient, RegistryOptions
    from faasd.images.registry.credentials import Credentials, CredentialStore
    from faasd.images.registry.pull import Puller, PullEvent, PullProgress
    from faasd.images.registry.push import Pusher, PushResult
    from faasd.images.registry.reference import Reference, parse

_LAZY = {
    "RegistryClient": "client",
    "RegistryOptions": "client",
    "Credentials": "credentials",
    "CredentialStore": "credentials",
    "Puller": "pull",
    "PullEvent": "pull",
    "PullProgress": "pull",
    "Pusher": "push",
    "PushResult": "push",
    "Reference": "reference",
    "parse": "reference",
}

__all__ = [
    "CredentialStore",
    "Credentials",
    "PullEvent",
    "PullProgress",
    "Puller",
    "PushResult",
    "Pusher",
    "Reference",
    "RegistryClient",
    "RegistryOptions",
    "options_from_settings",
    "parse",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'faasd.images.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"faasd.images.registry.{module}"), name)
    globals()[name] = value
    return value


def options_from_settings(settings: Settings) -> RegistryOptions:
    """Registry options from faasd Settings (credentials file, mirrors, insecure hosts)."""
    from faasd.images.registry.client import RegistryOptions
    from faasd.images.registry.credentials import CredentialStore

    return RegistryOptions(
        credentials=CredentialStore.default(settings.registry_auth_file),
        mirrors=dict(settings.registry_mirrors),
        insecure=tuple(settings.insecure_registries),
    )
