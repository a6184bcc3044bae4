"""Our own end-to-end tests must fail, not skip, when the daemon cannot start on a machine that can run it.

Users of the plugin get a skip by default; here we switch on ``--faasd-require``. On a machine without
root/runc the root conftest already skips every ``integration`` test before its fixtures run.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.option.faasd_require = True
