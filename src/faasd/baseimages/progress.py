"""Progress reporting of base-image builds: ``progress(phase, message)``."""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, str], None]
"""``progress(phase, message)``; phases: ``lock``, ``debootstrap``, ``upgrade``, ``trim``, ``check``,
``pack``, ``archive``, ``cleanup``, ``import``, ``done``."""


def _noop(phase: str, message: str) -> None:
    pass


def _prefixed(progress: ProgressCallback, name: str) -> ProgressCallback:
    def cb(phase: str, message: str) -> None:
        progress(phase, f"{name}: {message}")

    return cb
