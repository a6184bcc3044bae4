"""A short in-memory history of the daemon's own Prometheus counters, sampled every few seconds, for
the console's charts: invocations, errors, cold and warm starts and latency percentiles per interval
(percentiles interpolated inside the ``faasd_invocation_duration_seconds`` histogram buckets)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from faasd.platform.metrics import Metrics

Counts = dict[str, float]


@dataclass
class Point:
    t: float
    """Unix time of the end of the interval."""
    invocations: float = 0.0
    errors: float = 0.0
    cold: float = 0.0
    warm: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class _Reading:
    invocations: Counts = field(default_factory=dict)
    errors: Counts = field(default_factory=dict)
    cold: Counts = field(default_factory=dict)
    warm: Counts = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    """function -> upper bound -> cumulative count."""


def read(metrics: Metrics) -> _Reading:
    out = _Reading()
    for fam in metrics.invocations.collect():
        for s in fam.samples:
            if s.name.endswith("_total"):
                fn = s.labels["function"]
                out.invocations[fn] = out.invocations.get(fn, 0.0) + s.value
                if s.labels.get("status") != "succeeded":
                    out.errors[fn] = out.errors.get(fn, 0.0) + s.value
    for counter, target in ((metrics.cold_starts, out.cold), (metrics.warm_starts, out.warm)):
        for fam in counter.collect():
            for s in fam.samples:
                if s.name.endswith("_total"):
                    target[s.labels["function"]] = s.value
    for fam in metrics.duration.collect():
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                out.buckets.setdefault(s.labels["function"], {})[le] = s.value
    return out


def percentile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile (0..1) in seconds of cumulative histogram ``buckets`` (upper bound -> count),
    linearly interpolated inside its bucket; None without observations. The +Inf bucket answers with
    the largest finite bound."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return prev_bound
            inside = count - prev_count
            frac = 0.0 if inside <= 0 else (rank - prev_count) / inside
            return prev_bound + (b - prev_bound) * frac
        prev_bound, prev_count = (b if not math.isinf(b) else prev_bound), count
    return prev_bound


def _delta(now: Counts, before: Counts, fn: str | None) -> float:
    keys = [fn] if fn is not None else list(now)
    return sum(max(0.0, now.get(k, 0.0) - before.get(k, 0.0)) for k in keys)


def _bucket_delta(now: _Reading, before: _Reading, fn: str | None) -> dict[float, float]:
    out: dict[float, float] = {}
    for name, b in now.buckets.items():
        if fn is not None and name != fn:
            continue
        prev = before.buckets.get(name, {})
        for le, v in b.items():
            out[le] = out.get(le, 0.0) + max(0.0, v - prev.get(le, 0.0))
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


class MetricsHistory:
    def __init__(
        self,
        metrics: Metrics,
        *,
        interval_s: float = 2.0,
        keep: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._clock = clock
        self._readings: deque[tuple[float, _Reading]] = deque(maxlen=keep + 1)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        self._readings.append((self._clock(), read(self.metrics)))

    def series(self, function: str | None = None) -> list[Point]:
        readings = list(self._readings)
        points: list[Point] = []
        for (_t0, before), (t1, now) in itertools.pairwise(readings):
            b = _bucket_delta(now, before, function)
            points.append(
                Point(
                    t=round(t1, 3),
                    invocations=_delta(now.invocations, before.invocations, function),
                    errors=_delta(now.errors, before.errors, function),
                    cold=_delta(now.cold, before.cold, function),
                    warm=_delta(now.warm, before.warm, function),
                    p50_ms=_ms(percentile(b, 0.5)),
                    p90_ms=_ms(percentile(b, 0.9)),
                    p99_ms=_ms(percentile(b, 0.99)),
                )
            )
        return points

    def totals(self) -> dict[str, dict[str, float]]:
        r = read(self.metrics)
        names = set(r.invocations) | set(r.cold) | set(r.warm)
        return {
            n: {
                "invocations": r.invocations.get(n, 0.0),
                "errors": r.errors.get(n, 0.0),
                "cold": r.cold.get(n, 0.0),
                "warm": r.warm.get(n, 0.0),
            }
            for n in sorted(names)
        }

    def to_dict(self, function: str | None = None) -> dict[str, object]:
        return {
            "interval_s": self.interval_s,
            "function": function,
            "points": [asdict(p) for p in self.series(function)],
            "totals": self.totals(),
        }

    # -- background sampling (started by the first console request, ends with the event loop)
    def ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop (sync tests): sample on demand only
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
