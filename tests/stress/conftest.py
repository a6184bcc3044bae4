"""Fixtures for stress/soak tests: a real faasd daemon per test.

Stress tests run only with ``FAASD_STRESS=1`` (see ``tests/conftest.py``). Each test gets its own
daemon (private data/run dirs, free loopback port, auth on) so memory measurements are not skewed by
another test's load, and every sandbox it started is checked gone after it stops.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faasd.testing.server import FaasdServer, PlatformUnavailable


@pytest.fixture
def stress_server() -> Iterator[FaasdServer]:
    try:
        server = FaasdServer.start(env={"FAASD_BASE_IMAGES": "python"})
    except PlatformUnavailable as exc:
        pytest.fail(f"the faasd daemon did not start: {exc}")
    try:
        yield server
    finally:
        leaked = server.stop()
        assert not leaked, f"the daemon left sandboxes running after a clean stop: {leaked}"
