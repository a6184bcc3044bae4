"""pytest plugin of faasd (entry point ``pytest11: faasd``): test your functions in real sandboxes.

Fixtures:

* ``faasd_server`` (session): a :class:`~faasd.testing.server.FaasdServer`: a daemon subprocess on a free
  port with private data/run dirs (removed afterwards), or the daemon at ``FAAS_URL`` / ``--faasd-url``.
* ``faasd_platform`` (session): a :class:`faasd.sdk.Client` connected to it.
* ``faasd_deploy`` (function): ``deploy(name=None, source=..., image=..., **options)``; every function
  it deployed is deleted after the test.

When the platform cannot start (not root, no runc, daemon failure) tests using these fixtures are
*skipped* with the reason; ``--faasd-require`` (or ``FAASD_REQUIRE_PLATFORM=1``) turns that into an error.
The plugin imports nothing heavy at collection time, so it never breaks collection.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from faasd.sdk import Client, Function
    from faasd.testing.server import FaasdServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faasd", "faasd platform fixtures")
    group.addoption(
        "--faasd-url",
        default=None,
        help="Use the faasd daemon at this URL instead of starting one (default: $FAAS_URL).",
    )
    group.addoption(
        "--faasd-require",
        action="store_true",
        default=False,
        help="Fail, instead of skip, tests whose faasd platform cannot start.",
    )
    parser.addini(
        "faasd_start_timeout",
        "Seconds to wait for the daemon (first start builds base images).",
        default="900",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faasd: the test uses a real faasd platform (faasd_* fixtures)")


def _unavailable(config: pytest.Config, reason: str) -> NoReturn:
    require = config.getoption("--faasd-require") or os.environ.get("FAASD_REQUIRE_PLATFORM") == "1"
    if require:
        pytest.fail(f"faasd platform unavailable: {reason}", pytrace=False)
    pytest.skip(f"faasd platform unavailable: {reason}")


@pytest.fixture(scope="session")
def faasd_server(request: pytest.FixtureRequest) -> Iterator[FaasdServer]:
    from faasd.testing.server import FaasdServer, PlatformUnavailable

    config = request.config
    url = config.getoption("--faasd-url") or os.environ.get("FAAS_URL")
    try:
        if url:
            server = FaasdServer.connect(url)
        else:
            server = FaasdServer.start(start_timeout=float(config.getini("faasd_start_timeout")))
    except PlatformUnavailable as exc:
        _unavailable(config, str(exc))
    try:
        yield server
    finally:
        leaked = server.stop()
        if leaked:
            warnings.warn(
                f"the faasd daemon left {len(leaked)} sandbox(es) running after shutdown "
                f"(removed now): {', '.join(leaked)}",
                stacklevel=1,
            )


@pytest.fixture(scope="session")
def faasd_platform(faasd_server: FaasdServer) -> Iterator[Client]:
    client = faasd_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def faasd_deploy(faasd_server: FaasdServer, faasd_platform: Client) -> Iterator[Callable[..., Function]]:
    from faasd.sdk import NotFound
    from faasd.testing.helpers import deploy_function

    deployed: list[str] = []

    def deploy(
        name: str | None = None, *, source: str | Path | None = None, image: str | None = None, **options: Any
    ) -> Function:
        fn = deploy_function(faasd_platform, name, source=source, image=image, server=faasd_server, **options)
        deployed.append(fn.name)
        return fn

    yield deploy
    for name in reversed(deployed):
        with contextlib.suppress(NotFound):
            faasd_platform.delete_function(name)
