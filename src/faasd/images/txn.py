"""An import or write transaction of the image store: what it created (to roll back) and its progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from faasd.images.models import ProgressEvent

ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class _Txn:
    """What one import/write created, so it can be rolled back."""

    blobs: set[str] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)


class _Progress:
    def __init__(self, cb: ProgressCallback | None, total_steps: int, bytes_total: int | None) -> None:
        self.cb = cb
        self.total_steps = total_steps
        self.bytes_total = bytes_total
        self.step = 0
        self.bytes_done = 0
        self.phase = "read"
        self.description = ""

    def start(self, phase: str, description: str) -> None:
        self.step += 1
        self.phase, self.description = phase, description
        self.emit()

    def add(self, n: int) -> None:
        self.bytes_done += n
        self.emit()

    def emit(self) -> None:
        if self.cb is not None:
            self.cb(
                ProgressEvent(
                    self.phase,
                    self.description,
                    min(self.step, self.total_steps),
                    self.total_steps,
                    self.bytes_done,
                    self.bytes_total,
                )
            )
