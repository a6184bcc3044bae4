"""``bench/gateway_records.py`` runs against the daemon's current report path (it broke silently once when
that path's signature changed): a tiny run exits 0, writes every phase and finds every record written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gateway_records.py"


def test_the_gateway_records_bench_runs_on_the_current_report_path(tmp_path: Path) -> None:
    out = tmp_path / "gateway_records.json"
    res = subprocess.run(
        [sys.executable, str(BENCH), "-n", "128", "--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["medians_us"]) == {"decode", "+ record", "+ journal", "full"}
    assert all(us > 0 for us in doc["medians_us"].values())
