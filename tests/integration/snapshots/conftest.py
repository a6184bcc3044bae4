"""Fixtures for snapshot integration tests: leak checks limited to the ids a test created, CRIU's logs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import faasd.runtime.checkpoint as checkpoint_mod
import faasd.runtime.restore as restore_mod
from faasd.config import Settings
from faasd.rootfs import mounts
from faasd.testing.leaks import find_leaks


@pytest.fixture
def no_leaks(settings: Settings) -> Iterator[list[str]]:
    """Append every sandbox id the test creates; after the test none of them may leave a trace."""
    ids: list[str] = []
    yield ids
    assert find_leaks(settings, ids) == {}
    assert mounts.mounts_under(settings.data_dir) == []


@pytest.fixture
def criu_logs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(name, text) of every CRIU dump.log / restore.log, kept before faasd removes CRIU's work dir."""
    logs: list[tuple[str, str]] = []
    remove = checkpoint_mod.remove_work_dir

    def keep(work: Path, fd: int | None = None) -> None:
        for name in ("dump.log", "restore.log"):
            if (work / name).is_file():
                logs.append((name, (work / name).read_text(errors="replace")))
        remove(work, fd)

    monkeypatch.setattr(checkpoint_mod, "remove_work_dir", keep)  # dumps
    monkeypatch.setattr(restore_mod, "remove_work_dir", keep)  # restores
    return logs


@pytest.fixture
def criu_log(criu_logs: list[tuple[str, str]]) -> Callable[[str], str]:
    """``criu_log("dump.log")``: the text of the last CRIU log of that name the test's operations wrote."""

    def last(name: str) -> str:
        texts = [text for n, text in criu_logs if n == name]
        assert texts, f"no {name} kept"
        return texts[-1]

    return last
