"""Registry credentials from docker-style ``config.json`` files.

Looked up, first match wins, in: the faasd setting ``registry_auth_file``, ``$DOCKER_CONFIG/config.json``,
``~/.docker/config.json``. Each file may hold ``auths`` entries (``auth`` = base64 ``user:password``,
or ``username``/``password``, or an ``identitytoken``) and name credential helpers (``credHelpers`` per
host, ``credsStore`` for all), which are run as ``docker-credential-<name> get`` like Docker does.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faasd.errors import InvalidInputError, RegistryAuthError
from faasd.images.registry.reference import DOCKER_HUB

HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
HELPER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str | None = None
    """An OAuth2 refresh token (``docker login`` with some registries) used instead of the password."""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r})"


def default_paths(auth_file: Path | None = None) -> list[Path]:
    paths = [auth_file] if auth_file is not None else []
    if os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    paths.append(Path.home() / ".docker" / "config.json")
    return paths


def _host_of(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


def _keys_for(registry: str) -> tuple[str, ...]:
    return HUB_KEYS if registry == DOCKER_HUB else (registry,)


class CredentialStore:
    """Answers ``lookup(registry)`` from the config files; see module docstring."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._docs: list[tuple[Path, dict[str, Any]]] | None = None

    @classmethod
    def default(cls, auth_file: Path | None = None) -> CredentialStore:
        return cls(default_paths(auth_file))

    def _load(self) -> list[tuple[Path, dict[str, Any]]]:
        if self._docs is None:
            docs = []
            for path in self.paths:
                try:
                    doc = json.loads(path.read_text())
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as exc:
                    raise InvalidInputError(
                        f"registry credentials file {path} is unreadable: {exc}"
                    ) from None
                if not isinstance(doc, dict):
                    raise InvalidInputError(f"registry credentials file {path} must hold a JSON object")
                docs.append((path, doc))
            self._docs = docs
        return self._docs

    def lookup(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (a host[:port], ``docker.io`` for Docker Hub), or None."""
        keys = _keys_for(registry)
        for path, doc in self._load():
            helpers = doc.get("credHelpers") or {}
            for key in keys:
                if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
                    return _run_helper(helpers[key], key if registry != DOCKER_HUB else HUB_KEYS[0])
            auths = doc.get("auths") or {}
            if isinstance(auths, dict):
                for entry_key, entry in auths.items():
                    if _host_of(entry_key) in keys or entry_key in keys:
                        creds = _from_entry(entry, path, entry_key)
                        if creds is not None:
                            return creds
            store = doc.get("credsStore")
            if isinstance(store, str) and store:
                return _run_helper(
                    store, HUB_KEYS[0] if registry == DOCKER_HUB else registry, missing_ok=True
                )
        return None


def _from_entry(entry: Any, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{path}: auths[{key!r}] must be an object")
    token = entry.get("identitytoken")
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInputError(f"{path}: auths[{key!r}].auth is not base64 of 'user:password'") from None
        return Credentials(user, password, token if isinstance(token, str) else None)
    if isinstance(entry.get("username"), str):
        return Credentials(entry["username"], str(entry.get("password") or ""), token)
    if isinstance(token, str) and token:
        return Credentials("", "", token)
    return None


def _run_helper(name: str, server: str, missing_ok: bool = False) -> Credentials | None:
    binary = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [binary, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        if missing_ok:
            return None
        raise RegistryAuthError(
            f"credential helper {binary} (configured for {server}) is not installed", registry=server
        ) from None
    except subprocess.TimeoutExpired:
        raise RegistryAuthError(
            f"credential helper {binary} did not answer within {HELPER_TIMEOUT_S:.0f} s"
        ) from None
    if proc.returncode != 0:
        if b"credentials not found" in proc.stdout + proc.stderr:
            return None
        raise RegistryAuthError(
            f"credential helper {binary} failed for {server}: {proc.stderr.decode(errors='replace').strip()}"
        )
    try:
        doc = json.loads(proc.stdout)
        user, secret = str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryAuthError(
            f"credential helper {binary} answered something that is not its JSON"
        ) from None
    if user == "<token>":
        return Credentials("", "", secret)
    return Credentials(user, secret)
