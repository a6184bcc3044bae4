"""Fixtures for runtime integration tests: a manager on private dirs, spec factory, leak checks by id."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from faasd.runtime import SandboxSpec
from faasd.testing.leaks import sandbox_leaks


@pytest.fixture
def sid(unique_id: str) -> str:
    return f"fd-{unique_id}"


@pytest.fixture
def make_spec(python_rootfs: Path, sid: str) -> Callable[..., SandboxSpec]:
    def make(*args: str, **kw: Any) -> SandboxSpec:
        kw.setdefault("id", sid)
        return SandboxSpec(lowers=[python_rootfs], args=list(args) if args else None, **kw)

    return make


@pytest.fixture
def no_leaks(settings: Settings, sid: str) -> Callable[[], None]:
    def check() -> None:
        assert sandbox_leaks(settings, sid) == []

    return check


@pytest.fixture
def leaks_of(settings: Settings) -> Callable[[str], list[str]]:
    """``leaks_of(sandbox_id)``: traces of another id this test created (e.g. a restored sandbox)."""
    return partial(sandbox_leaks, settings)
