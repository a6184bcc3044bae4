"""Fixtures for stress/soak tests: a real faasd daemon per test.

Stress tests run only with ``FAASD_STRESS=1`` (see ``tests/conftest.py``). Each test gets its own
daemon (private data/run dirs, free loopback port, auth on) so memory measurements are not skewed by
another test's load, and every sandbox it started is checked gone after it stops.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer


@pytest.fixture
def stress_server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as server:
        yield server
