"""The daemon settles its heap before it serves: start-up's survivors frozen out of the collector's reach and
the collector's thresholds raised (``faasd.daemon.settle_heap``). Each check runs in a fresh interpreter:
freezing and thresholds are process-wide and must not leak into the test run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PLATFORM_FAKES = Path(__file__).resolve().parent / "platform"


def _python(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_settle_heap_freezes_what_start_up_left_and_raises_the_thresholds() -> None:
    seen = _python(
        "import gc, json\n"
        "from faasd import daemon\n"
        "before = (gc.get_freeze_count(), gc.get_threshold())\n"
        "daemon.settle_heap()\n"
        "print(json.dumps({'before': before, 'frozen': gc.get_freeze_count(),"
        " 'threshold': gc.get_threshold(), 'young': gc.get_count()[0], 'want': daemon.GC_THRESHOLDS}))\n"
    )
    assert seen["before"] == [0, [700, 10, 10]]
    assert seen["threshold"] == seen["want"]
    # the daemon's imports alone (FastAPI, SQLAlchemy, the platform) are tens of thousands of objects
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 20_000
    assert seen["young"] == 0


def test_the_daemon_settles_its_heap_before_it_serves(tmp_path: Path) -> None:
    """``main`` up to the HTTP server (the platform a test double's, the server's ``run`` replaced): when the
    server would start, the heap is frozen and the thresholds are the daemon's."""
    code = f"""
import gc, json, sys
sys.path.insert(0, {str(PLATFORM_FAKES)!r})
import uvicorn
from platform_fakes import FakeFactory
from faasd import daemon
from faasd.platform.core import Platform

seen = {{}}
daemon.build_platform = lambda settings, base: Platform(settings, FakeFactory())
def run(self, *args, **kwargs):
    seen.update(frozen=gc.get_freeze_count(), threshold=gc.get_threshold())
uvicorn.Server.run = run
rc = daemon.main(["--data-dir", {str(tmp_path / "data")!r}, "--run-dir", {str(tmp_path / "run")!r},
                  "--cache-dir", {str(tmp_path / "cache")!r}, "--base-images", "none", "--port", "1"])
print(json.dumps({{"rc": rc, **seen, "want": daemon.GC_THRESHOLDS}}))
"""
    seen = _python(code)
    assert seen["rc"] == 0
    assert seen["threshold"] == seen["want"]
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 20_000
