"""Pure helpers of the console: histogram percentiles, metrics history, terminal output parsing."""

from __future__ import annotations

import math

from faasd.console.history import MetricsHistory, percentile
from faasd.console.routes_terminal import parse_listing, split_cwd
from faasd.platform.metrics import Metrics


def test_percentile_interpolates_inside_buckets() -> None:
    assert percentile({}, 0.5) is None
    assert percentile({0.1: 0, math.inf: 0}, 0.5) is None
    b = {0.1: 10.0, 0.2: 20.0, math.inf: 20.0}  # 10 in (0,0.1], 10 in (0.1,0.2]
    assert percentile(b, 0.5) == 0.1
    assert abs((percentile(b, 0.75) or 0) - 0.15) < 1e-9
    assert abs((percentile(b, 0.25) or 0) - 0.05) < 1e-9
    assert percentile({0.1: 0.0, math.inf: 4.0}, 0.5) == 0.1  # only +Inf: the largest finite bound


def test_history_reports_per_interval_deltas() -> None:
    m = Metrics()
    t = [100.0]
    h = MetricsHistory(m, clock=lambda: t[0])
    m.invocations.labels("a", "succeeded").inc(3)
    h.sample()
    m.invocations.labels("a", "succeeded").inc(2)
    m.invocations.labels("a", "failed").inc(1)
    m.invocations.labels("b", "succeeded").inc(5)
    m.cold_starts.labels("a").inc()
    m.warm_starts.labels("a").inc(2)
    for v in (0.02, 0.02, 0.3):
        m.duration.labels("a").observe(v)
    t[0] = 102.0
    h.sample()
    (pa,) = h.series("a")
    assert (pa.t, pa.invocations, pa.errors, pa.cold, pa.warm) == (102.0, 3, 1, 1, 2)
    assert pa.p50_ms is not None and 10 < pa.p50_ms <= 25
    assert pa.p99_ms is not None and 250 < pa.p99_ms <= 500
    (total,) = h.series(None)
    assert total.invocations == 8
    assert h.totals()["a"] == {"invocations": 6, "errors": 1, "cold": 1, "warm": 2}


def test_split_cwd_and_listing() -> None:
    assert split_cwd("hello\n\x1e/tmp", "/") == ("hello\n", "/tmp")
    assert split_cwd("no marker", "/root") == ("no marker", "/root")
    listing = "regular file\t5\t10\tb.txt\ndirectory\t4096\t11\tsub\nsymbolic link\t3\t1\tl\ngarbage"
    entries = parse_listing(listing, "/data")
    assert [(e["name"], e["kind"], e["path"]) for e in entries] == [
        ("sub", "dir", "/data/sub"),
        ("b.txt", "file", "/data/b.txt"),
        ("l", "link", "/data/l"),
    ]
    assert parse_listing("directory\t1\t1\tetc", "/")[0]["path"] == "/etc"
