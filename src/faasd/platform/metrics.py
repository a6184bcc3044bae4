"""Prometheus metrics, one private registry per platform instance (tests build many apps)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PoolGauges:
    """A warm pool's gauges (``faasd_pool_workers`` busy/idle, ``faasd_pool_queue_depth``): label children
    looked up once, each set only when its value changed (every acquire and release reports)."""

    def __init__(self, busy: Gauge, idle: Gauge, queued: Gauge) -> None:
        self._children = (busy, idle, queued)
        self._last: tuple[int, int, int] | None = None

    def update(self, busy: int, idle: int, queued: int) -> None:
        values = (busy, idle, queued)
        last = self._last
        self._last = values
        for i, child in enumerate(self._children):
            if last is None or last[i] != values[i]:
                child.set(values[i])


class Metrics:
    def __init__(self) -> None:
        self._pool_gauges: dict[str, PoolGauges] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter(
            "faasd_invocations_total",
            "Function invocations by final status",
            ["function", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "faasd_invocation_duration_seconds",
            "Invocation wall time (init+wait+run)",
            ["function"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.handoffs = Counter(
            "faasd_gateway_handoffs_total",
            "Client connections the gateway handed to a warm worker (see faasd.api.handoff)",
            ["function"],
            registry=r,
        )
        self.handbacks = Counter(
            "faasd_gateway_handbacks_total",
            "Handed client connections a worker gave back to the gateway",
            ["function"],
            registry=r,
        )
        self.relays = Counter(
            "faasd_gateway_relays_total",
            "Client connections with an API key the gateway relayed to a warm worker (see faasd.api.relay)",
            ["function"],
            registry=r,
        )
        self.relays_open = Gauge(
            "faasd_gateway_relays_open", "Relayed client connections open now", registry=r
        )
        self.spares = Gauge(
            "faasd_ephemeral_spares",
            "Spare sandboxes of ephemeral functions, created and not started",
            registry=r,
        )
        self.cold_starts = Counter(
            "faasd_cold_starts_total", "Invocations that had to start a worker", ["function"], registry=r
        )
        self.warm_starts = Counter(
            "faasd_warm_starts_total", "Invocations served by a warm worker", ["function"], registry=r
        )
        self.pool_workers = Gauge(
            "faasd_pool_workers", "Workers in a warm pool", ["function", "state"], registry=r
        )
        self.pool_queue = Gauge(
            "faasd_pool_queue_depth", "Requests waiting for a worker", ["function"], registry=r
        )
        self.errors = Counter("faasd_errors_total", "Errors by kind (error code)", ["kind"], registry=r)
        self.queued = Gauge("faasd_executions_queued", "Async executions waiting to run", registry=r)
        self.snapshot_ops = Counter(
            "faasd_snapshot_operations_total",
            "Snapshot operations (snapshot layer)",
            ["op", "result"],
            registry=r,
        )
        self.snapshot_image_cache = Gauge(
            "faasd_snapshot_image_cache_bytes",
            "Bytes of snapshot process images unpacked in memory (faasd.snapshots.image_cache)",
            registry=r,
        )
        self.http_requests = Counter(
            "faasd_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )

    def pool_gauges(self, name: str) -> PoolGauges:
        gauges = self._pool_gauges.get(name)
        if gauges is None:
            gauges = self._pool_gauges[name] = PoolGauges(
                self.pool_workers.labels(name, "busy"),
                self.pool_workers.labels(name, "idle"),
                self.pool_queue.labels(name),
            )
        return gauges

    def forget_function(self, name: str) -> None:
        self._pool_gauges.pop(name, None)
        for g, labels in (
            (self.pool_workers, [(name, "idle"), (name, "busy")]),
            (self.pool_queue, [(name,)]),
        ):
            for lv in labels:
                with contextlib.suppress(KeyError):
                    g.remove(*lv)
