"""OCI registries: references, credentials, the distribution-API client, pull and push."""

from faasd.config import Settings
from faasd.images.registry.client import RegistryClient, RegistryOptions
from faasd.images.registry.credentials import Credentials, CredentialStore
from faasd.images.registry.pull import Puller, PullEvent, PullProgress
from faasd.images.registry.push import Pusher, PushResult
from faasd.images.registry.reference import Reference, parse

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


def options_from_settings(settings: Settings) -> RegistryOptions:
    """Registry options from faasd Settings (credentials file, mirrors, insecure hosts)."""
    return RegistryOptions(
        credentials=CredentialStore.default(settings.registry_auth_file),
        mirrors=dict(settings.registry_mirrors),
        insecure=tuple(settings.insecure_registries),
    )
