"""The Python agent's modules loaded from their files, for unit tests of its parts."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from faasd.runtime.agent_files import python_agent_path


def load_agent_module(name: str) -> ModuleType:
    """The agent's module ``name`` (e.g. ``faasd_direct``) under a private name, its sibling modules
    importable while it loads."""
    agent_dir = str(python_agent_path().parent)
    sys.path.insert(0, agent_dir)
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", f"{agent_dir}/{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(agent_dir)
