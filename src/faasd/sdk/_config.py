"""Where the client connects, with which key and in which namespace: arguments, then ``FAAS_URL`` /
``FAAS_API_KEY`` / ``FAAS_NAMESPACE``, defaults."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"
ADMIN_KEY_FILE = Path("/var/lib/faasd/admin.key")


def resolve_base_url(base_url: str | None = None) -> str:
    url = base_url or os.environ.get("FAAS_URL") or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def default_key_file() -> Path:
    """``FAAS_API_KEY_FILE``, else ``admin.key`` in ``FAASD_DATA_DIR`` (a local daemon's data dir), else
    ``/var/lib/faasd/admin.key``."""
    if os.environ.get("FAAS_API_KEY_FILE"):
        return Path(os.environ["FAAS_API_KEY_FILE"])
    if os.environ.get("FAASD_DATA_DIR"):
        return Path(os.environ["FAASD_DATA_DIR"]) / "admin.key"
    return ADMIN_KEY_FILE


def resolve_api_key(api_key: str | None = None, *, key_file: Path | None = None) -> str | None:
    """The explicit key, else ``FAAS_API_KEY``, else the admin key file when this user can read it."""
    if api_key:
        return api_key
    env = os.environ.get("FAAS_API_KEY")
    if env:
        return env.strip()
    path = key_file or default_key_file()
    try:
        key = path.read_text().strip()
    except OSError:
        return None
    return key or None


def resolve_namespace(namespace: str | None = None) -> str | None:
    """The explicit namespace, else ``FAAS_NAMESPACE``, else None (the key's namespace, or the default)."""
    return namespace or os.environ.get("FAAS_NAMESPACE") or None
