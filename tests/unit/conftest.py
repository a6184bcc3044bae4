"""Shared by the unit tests: the platform test double (``tests/unit/platform/platform_fakes.py``) is
importable as ``platform_fakes`` from every unit test package (api, console, platform, ...), one module
object for all of them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load_platform_fakes() -> None:
    if "platform_fakes" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "platform_fakes", Path(__file__).parent / "platform" / "platform_fakes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["platform_fakes"] = module
    spec.loader.exec_module(module)


_load_platform_fakes()
