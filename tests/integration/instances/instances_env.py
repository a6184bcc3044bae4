"""The environment the instance tests get from the ``inst_env`` fixture (importable by a unique module name;
``from conftest import ...`` picks whichever conftest was imported first)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from faasd.config import Settings
from faasd.platform.core import Platform


@dataclass
class InstanceEnv:
    platform: Platform
    client: httpx.AsyncClient
    settings: Settings
