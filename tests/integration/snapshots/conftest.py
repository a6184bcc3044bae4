"""Fixtures for snapshot integration tests: leak checks limited to the ids a test created."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faasd.config import Settings
from faasd.rootfs import mounts
from faasd.testing.leaks import find_leaks


@pytest.fixture
def no_leaks(settings: Settings) -> Iterator[list[str]]:
    """Append every sandbox id the test creates; after the test none of them may leave a trace."""
    ids: list[str] = []
    yield ids
    assert find_leaks(settings, ids) == {}
    assert mounts.mounts_under(settings.data_dir) == []
