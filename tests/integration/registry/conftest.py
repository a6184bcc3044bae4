from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.registry import Registry


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A docker-registry without auth on a free loopback port (one per test session)."""
    reg = Registry(auth=False).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[Registry]:
    """A docker-registry with htpasswd (basic) auth."""
    reg = Registry(auth=True).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def token_registry() -> Iterator[Registry]:
    """A docker-registry with bearer-token auth (a token server on another loopback port)."""
    reg = Registry(auth="token").start()
    try:
        yield reg
    finally:
        reg.stop()
