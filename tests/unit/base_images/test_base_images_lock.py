"""The base-image build lock: one builder per cache dir; the next one waits (and says so), then removes
what a dead builder left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from faasd.baseimages import build
from faasd.filelock import flock, open_lock_file


def test_second_builder_waits_then_removes_leftovers_of_a_dead_one(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / ".build-python-dead").mkdir(parents=True)
    (base / ".build-python-dead" / "rootfs").write_text("half a rootfs")
    (base / ".tmp-python-0123456789abcdef.tar.1a2b3c4d").write_text("half an archive")
    (base / "python-0123456789abcdef.tar").write_text("a finished archive")
    holder = open_lock_file(base / ".lock")
    assert flock(holder)
    events: list[tuple[str, str]] = []
    waiting = threading.Event()

    def progress(phase: str, message: str) -> None:
        events.append((phase, message))
        if message.startswith("waiting for another base image build"):
            waiting.set()

    def second_builder() -> None:
        with build._build_lock(base, progress):
            events.append(("locked", ""))

    t = threading.Thread(target=second_builder)
    try:
        t.start()
        assert waiting.wait(60)
        # still waiting: nothing of the (live) holder's build may be touched
        assert (base / ".build-python-dead" / "rootfs").exists()
        assert ("locked", "") not in events
    finally:
        os.close(holder)
        t.join(60)
    assert not t.is_alive()
    assert events[-1] == ("locked", "")
    removed = sorted(m.split(": ", 1)[1] for p, m in events if "leftovers of an interrupted build" in m)
    assert removed == [".build-python-dead", ".tmp-python-0123456789abcdef.tar.1a2b3c4d"]
    assert sorted(p.name for p in base.iterdir()) == [".lock", "python-0123456789abcdef.tar"]


def test_lock_is_free_again_after_a_failed_build(tmp_path: Path) -> None:
    base = tmp_path / "base"
    try:
        with build._build_lock(base, lambda p, m: None):
            raise RuntimeError("debootstrap failed")
    except RuntimeError:
        pass
    fd = open_lock_file(base / ".lock")
    try:
        assert flock(fd, blocking=False)
    finally:
        os.close(fd)
