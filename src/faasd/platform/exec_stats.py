"""The execute result cache (bounded, expiring) and the measured numbers behind ``/api/v1/metrics``."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CACHE_ENTRIES = 1024
DEFAULT_CACHE_TTL_S = 300.0
MAX_CACHED_BYTES = 1024 * 1024
LATENCY_WINDOW = 4096


def cache_key_for(
    image_id: str,
    args: Sequence[str],
    env: Mapping[str, str],
    stdin: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A stable key of what decides a run's result: image digest, argv, environment, stdin (+ limits)."""
    doc = {"image": image_id, "args": list(args), "env": dict(sorted(env.items())), "stdin": stdin}
    if extra:
        doc["extra"] = dict(extra)
    return "h:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class ResultCache:
    """LRU of results with a TTL; at most ``max_entries`` entries, each at most ``MAX_CACHED_BYTES``."""

    def __init__(
        self,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        ttl_s: float = DEFAULT_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.evictions = 0
        self.expirations = 0

    def get(self, key: str) -> dict[str, Any] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, value = hit
        if self.clock() >= expires:
            del self._entries[key]
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: dict[str, Any]) -> bool:
        """Store ``value``; False (not stored) if its output is too big to keep."""
        size = len(str(value.get("stdout", ""))) + len(str(value.get("stderr", "")))
        if size > MAX_CACHED_BYTES:
            return False
        self._entries[key] = (self.clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self._entries),
            "max_entries": self.max_entries,
            "ttl_s": self.ttl_s,
            "evictions": self.evictions,
            "expirations": self.expirations,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None without data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return round(ordered[rank - 1], 3)


@dataclass
class ExecMetrics:
    """Counts and latencies of real executions (nothing estimated): what ``/api/v1/metrics`` reports."""

    started_at: float = field(default_factory=time.time)
    total: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    by_runtime: dict[str, int] = field(default_factory=dict)
    cold_starts: int = 0
    warm_starts: int = 0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    cold_start_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    warm_start_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def record(
        self,
        *,
        mode: str,
        runtime: str,
        latency_ms: float,
        cache_hit: bool = False,
        start: str | None = None,
        start_ms: float | None = None,
        failed: bool = False,
    ) -> None:
        self.total += 1
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        self.by_runtime[runtime] = self.by_runtime.get(runtime, 0) + 1
        self.latency_ms.append(latency_ms)
        if failed:
            self.errors += 1
        if mode == "cached":
            if cache_hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1
        if start == "cold":
            self.cold_starts += 1
            if start_ms is not None:
                self.cold_start_ms.append(start_ms)
        elif start == "warm":
            self.warm_starts += 1
            if start_ms is not None:
                self.warm_start_ms.append(start_ms)

    def failed(self, mode: str, runtime: str, latency_ms: float) -> None:
        self.record(mode=mode, runtime=runtime, latency_ms=latency_ms, failed=True)

    @property
    def cache_hit_rate(self) -> float:
        looked = self.cache_hits + self.cache_misses
        return round(self.cache_hits / looked, 6) if looked else 0.0

    def summary(self) -> dict[str, Any]:
        lat = list(self.latency_ms)
        return {
            "total_requests": self.total,
            "request_count": self.total,
            "errors": self.errors,
            "error_rate": round(self.errors / self.total, 6) if self.total else 0.0,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_rate": self.cache_hit_rate,
            "docker_executions": self.by_runtime.get("runc", 0),
            "gvisor_executions": self.by_runtime.get("runsc", 0),
            "vm_executions": 0,
            "avg_execution_time_ms": round(sum(lat) / len(lat), 3) if lat else None,
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    def performance(self) -> dict[str, Any]:
        lat, cold, warm = list(self.latency_ms), list(self.cold_start_ms), list(self.warm_start_ms)
        return {
            "samples": len(lat),
            "latency_ms": {
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
            },
            "cold_starts": self.cold_starts,
            "warm_starts": self.warm_starts,
            "cold_start_ms": {"p50": percentile(cold, 50), "p99": percentile(cold, 99)},
            "warm_start_ms": {"p50": percentile(warm, 50), "p99": percentile(warm, 99)},
            "avg_cold_start_ms": round(sum(cold) / len(cold), 3) if cold else None,
            "avg_warm_start_ms": round(sum(warm) / len(warm), 3) if warm else None,
            "p99_latency_ms": percentile(lat, 99),
        }
