"""Exception types shared by every layer.

Each error carries a machine-readable ``code`` and a message; HTTP statuses belong to the API layer
(``faasd.api.errors.HTTP_STATUS`` maps every code to one), so that a failure deep in the image store
reaches the user as a clear 4xx/5xx JSON body instead of a bare 500. A new error class needs a code of its
own or its base class's, and an entry in that table (a unit test fails for a code without one).
Messages are written for the user: say what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any


class FaasdError(Exception):
    """Base class of every error faasd raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInputError(FaasdError):
    """The caller sent something malformed or unacceptable (bad JSON, bad tarball, bad name)."""

    code = "invalid_input"


class NotFoundError(FaasdError):
    """A named thing (function, image, snapshot, execution, instance) does not exist."""

    code = "not_found"


class ConflictError(FaasdError):
    """The request conflicts with current state (name taken, image in use, merge conflict)."""

    code = "conflict"


class PayloadTooLargeError(InvalidInputError):
    code = "payload_too_large"


class CapacityError(FaasdError):
    """No capacity right now (pool saturated, queue full): retry later."""

    code = "capacity_exhausted"

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class AuthError(FaasdError):
    code = "unauthorized"


class ForbiddenError(FaasdError):
    code = "forbidden"


class ResourceLimitError(FaasdError):
    """A sandbox hit one of its limits (memory, pids, disk, wall-clock)."""

    code = "resource_limit"


class PidsExhaustedError(ResourceLimitError):
    """A sandbox hit its pids limit (a fork or thread creation failed); the request, or the offending
    process group of an instance exec, was killed as soon as that was seen."""

    code = "pids_exhausted"


def pids_exhausted(pids: int | None, what: str = "the process", **details: Any) -> PidsExhaustedError:
    """The :class:`PidsExhaustedError` for a sandbox with a pids limit of ``pids``."""
    limit = f"{pids} processes/threads" if pids is not None else "its process limit"
    return PidsExhaustedError(
        f"pids limit of {limit} reached (a fork bomb, or too many processes or threads): {what} was "
        "killed; raise the pids limit or start fewer processes",
        limit="pids",
        pids=pids,
        **details,
    )


class DiskLimitTooLargeError(InvalidInputError):
    """A requested disk limit is larger than the host can hold (free space minus the reserve)."""

    code = "disk_limit_too_large"


class IsolationUnsupportedError(InvalidInputError):
    """The requested feature cannot work under the chosen isolation backend (e.g. CRIU under gVisor)."""

    code = "isolation_unsupported"


class StorageFullError(FaasdError):
    """The data directory (or run_dir) ran out of space; the operation was rolled back."""

    code = "storage_full"


class RuntimeFailure(FaasdError):
    """An external runtime tool (runc, CRIU, debootstrap, umoci) failed; the message carries its stderr."""

    code = "runtime_failure"


class StateVersionError(FaasdError):
    """The on-disk state (database schema, data/run dir layout) was written by a newer faasd: this one
    refuses to start on it rather than misread it (it never downgrades state)."""

    code = "state_version"


class RegistryError(FaasdError):
    """A container registry could not be reached or answered with something unusable (pull/push).

    The daemon works, the registry the request names does not (the API answers 424 Failed Dependency, not
    5xx); the code (``registry_error``, ``registry_unauthorized``, ``digest_mismatch``) says which way."""

    code = "registry_error"


class RegistryAuthError(RegistryError):
    """A registry refused the credentials faasd sent (or wants credentials faasd does not have)."""

    code = "registry_unauthorized"


class DigestMismatchError(RegistryError):
    """Content from a registry does not hash to the digest that names it; nothing of it was kept."""

    code = "digest_mismatch"
