"""The data of a warm pool (:mod:`faasd.platform.pools`): its configuration, its slots, a lease of one,
and its statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

from faasd.errors import InvalidInputError
from faasd.platform.worker_protocol import PoolWorker


@dataclass
class PoolConfig:
    min: int = 0
    max: int = 4
    concurrency: int = 1
    queue_size: int = 100
    idle_ttl_s: float = 300.0

    def validate(self) -> None:
        if self.min < 0 or self.max < 1 or self.min > self.max:
            raise InvalidInputError(
                f"scale bounds must satisfy 0 <= min <= max and max >= 1, got min={self.min} max={self.max}"
            )
        if self.concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.queue_size < 0:
            raise InvalidInputError(f"queue_size must be >= 0, got {self.queue_size}")


@dataclass(eq=False)
class Slot:
    worker: PoolWorker
    inflight: int = 0
    last_used: float = 0.0
    served: int = 0
    broken: bool = False


@dataclass
class Lease:
    slot: Slot
    cold: bool
    wait_ms: float
    init_ms: float

    @property
    def worker(self) -> PoolWorker:
        return self.slot.worker


@dataclass
class PoolStats:
    replicas: int
    busy: int
    idle: int
    starting: int
    queued: int
    min: int
    max: int
    inflight: int = 0
    served: int = 0
    extra: dict[str, int] = field(default_factory=dict)
