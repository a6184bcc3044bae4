"""No import circle anywhere in ``faasd`` (``scripts/import_cycles.py``: every import statement counts,
function-local and ``TYPE_CHECKING`` ones included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faasd

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_cycles.py"


def run(src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(src), *args], capture_output=True, text=True, check=False
    )


def test_no_import_cycle_in_faasd() -> None:
    res = run(Path(faasd.__file__).parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no import cycles" in res.stdout


def test_the_check_sees_a_function_local_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "low.py").write_text("def f():\n    from pkg.high import g  # 'to avoid a cycle'\n")
    (pkg / "high.py").write_text("from pkg.sub import low\n")
    (pkg / "other.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import high\n"
    )
    (pkg / "leaf.py").write_text("from .sub.low import f\n")
    res = run(pkg, "--only", "pkg.sub")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "pkg.sub.low -> pkg.high  [local]" in res.stdout
    assert "pkg.high -> pkg.sub.low  [module]" in res.stdout
    assert "pkg.other" not in res.stdout and "pkg.leaf" not in res.stdout
