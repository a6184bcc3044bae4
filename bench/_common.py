"""Shared helpers for the benchmarks in ``bench/``: statistics, tables, JSON results, a real daemon.

Every benchmark measures faasd **next to a baseline in the same run** (same machine, same load) and
reports the ratio ``faasd / baseline``. The machine is shared with other contributors, so every result
records the load averages at the start and at the end of the run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_DIR = Path(__file__).resolve().parent
PYTHON_HELLO = 'def handle(event, context):\n    return "hello"\n'


# ------------------------------------------------------------------------------------------ statistics
def percentile(samples: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of ``samples``; NaN for no samples."""
    if not samples:
        return math.nan
    s = sorted(samples)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99, mean, min, max of latencies in milliseconds (rounded to 0.01)."""
    if not samples_ms:
        return {"n": 0}
    out = {
        "n": len(samples_ms),
        "p50": percentile(samples_ms, 50),
        "p90": percentile(samples_ms, 90),
        "p99": percentile(samples_ms, 99),
        "mean": statistics.fmean(samples_ms),
        "min": min(samples_ms),
        "max": max(samples_ms),
    }
    return {k: (v if k == "n" else round(v, 2)) for k, v in out.items()}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 2)


# ------------------------------------------------------------------------------------------ machine
def _first_line(cmd: Sequence[str]) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        return "not installed"
    res = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, check=False)
    lines = (res.stdout or res.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, load, kernel, tool versions, date (UTC)."""
    criu = shutil.which("criu") or "/usr/local/sbin/criu"
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "loadavg": load_avg(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "runc": _first_line(["runc", "--version"]),
        "criu": _first_line([criu, "--version"]),
        "podman": _first_line(["podman", "--version"]),
        "shared_machine": True,
    }


# ------------------------------------------------------------------------------------------ tables
@dataclass
class Row:
    """One line of a comparison table: a metric, faasd's value, the baseline's value and the ratio."""

    metric: str
    faasd: float | None
    baseline: float | None
    unit: str = "ms"
    baseline_name: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return ratio(self.faasd, self.baseline)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "faasd": self.faasd,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "note": self.note,
        }


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def _ratio_str(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def table_lines(rows: Iterable[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "faasd", "baseline", "ratio"]
    body = []
    for r in rows:
        base = _fmt(r.baseline, r.unit)
        if r.baseline_name:
            base = f"{base} ({r.baseline_name})"
        body.append([r.metric, _fmt(r.faasd, r.unit), base, _ratio_str(r.ratio)])
    return header, body


def print_table(title: str, rows: Sequence[Row]) -> None:
    """A rich table when rich is importable and stdout is a terminal, else aligned plain text."""
    header, body = table_lines(rows)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency of the CLI
        Console = None  # type: ignore[assignment,misc]
    if Console is not None and sys.stdout.isatty():
        t = Table(title=title)
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if i == 0 else "right")
        for line in body:
            t.add_row(*line)
        Console().print(t)
        return
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]
    print(title)
    for cells in [header, *body]:
        pairs = enumerate(zip(cells, widths, strict=True))
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs))


def markdown_table(rows: Sequence[Row]) -> str:
    header, body = table_lines(rows)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ results
def write_result(name: str, data: Mapping[str, Any], *, path: Path | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (or ``path``) with machine info added; return the path."""
    out = path or RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "machine": machine_info(), **data}
    if "rows" in doc:
        doc["rows"] = [r.as_dict() if isinstance(r, Row) else r for r in doc["rows"]]
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(out)
    return out


def rows_from_json(doc: Mapping[str, Any]) -> list[Row]:
    return [
        Row(
            metric=r["metric"],
            faasd=r["faasd"],
            baseline=r["baseline"],
            unit=r.get("unit", "ms"),
            baseline_name=r.get("baseline_name", ""),
            note=r.get("note", ""),
        )
        for r in doc.get("rows", [])
    ]


# ------------------------------------------------------------------------------------------ daemon
def require_root() -> None:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        raise SystemExit("this benchmark needs root and runc (real sandboxes)")


def start_daemon(*, base_images: str = "python", env: Mapping[str, str] | None = None) -> Any:
    """A real ``faasd`` daemon subprocess on a free loopback port with private data/run dirs.

    Thin wrapper over :class:`faasd.testing.server.FaasdServer` (what the pytest plugin uses). The
    cache dir is the host's (``/var/cache/faasd``) so the cached base image archive is imported, not
    rebuilt. Use as a context manager or call ``.stop()``.
    """
    from faasd.testing.server import FaasdServer

    return FaasdServer.start(env={"FAASD_BASE_IMAGES": base_images, **(env or {})}, start_timeout=900.0)


def deploy_hello(server: Any, name: str, source_dir: Path, **options: Any) -> Any:
    """Deploy the python hello handler (``handler.handle``) from ``source_dir`` on ``server``."""
    from faasd.testing.helpers import deploy_function

    source_dir.mkdir(parents=True, exist_ok=True)
    (source_dir / "handler.py").write_text(PYTHON_HELLO)
    with server.client(timeout=300.0) as client:
        return deploy_function(
            client, name, source=source_dir, server=server, runtime="python", handler="handler.handle",
            **options,
        )
