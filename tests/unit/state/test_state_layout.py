"""Layout versions of data_dir / run_dir: stamped when missing, older ones migrated step by step, newer ones
(and unreadable version files) refused without touching the directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faasd import __version__
from faasd.errors import StateVersionError
from faasd.state import layout
from faasd.state.layout import DATA_LAYOUT, RUN_LAYOUT, check_layout, check_layouts, read_version


def test_missing_version_files_are_stamped_with_the_current_layouts(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    (data / "faasd.db").write_bytes(b"")  # a directory from before layouts were versioned
    reports = check_layouts(data, run)
    assert [r.found for r in reports] == [None, None]
    assert json.loads((data / "VERSION").read_text()) == {"layout": DATA_LAYOUT, "faasd": __version__}
    assert read_version(run) == (RUN_LAYOUT, __version__)
    assert [r.found for r in check_layouts(data, run)] == [DATA_LAYOUT, RUN_LAYOUT]  # idempotent


def test_an_older_layout_runs_each_step_in_order(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text(json.dumps({"layout": 1, "faasd": "0.0.9"}))
    ran: list[tuple[int, int | None]] = []

    def step(n: int) -> layout.Step:
        def run(root: Path) -> None:
            found = read_version(root)
            ran.append((n, found[0] if found else None))  # the file says n while step n runs

        return run

    report = check_layout(tmp_path, kind="data dir", current=3, steps={1: step(1), 2: step(2)})
    assert ran == [(1, 1), (2, 2)] and report.migrated == [1, 2] and report.found == 1
    assert read_version(tmp_path) == (3, __version__)


def test_a_failed_step_leaves_the_version_it_started_from(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text(json.dumps({"layout": 1, "faasd": "0.0.9"}))

    def ok(root: Path) -> None:
        pass

    def boom(root: Path) -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        check_layout(tmp_path, kind="data dir", current=3, steps={1: ok, 2: boom})
    assert read_version(tmp_path) == (2, __version__)


def test_a_newer_layout_is_refused_naming_both_versions(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text(json.dumps({"layout": DATA_LAYOUT + 1, "faasd": "9.0.0"}))
    before = (tmp_path / "VERSION").read_text()
    with pytest.raises(StateVersionError) as err:
        check_layouts(tmp_path, tmp_path / "unused")
    msg = err.value.message
    assert f"layout version {DATA_LAYOUT + 1}" in msg and "faasd 9.0.0" in msg
    assert f"up to {DATA_LAYOUT}" in msg and __version__ in msg and str(tmp_path) in msg
    assert (tmp_path / "VERSION").read_text() == before


def test_an_older_layout_without_a_step_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text(json.dumps({"layout": 1, "faasd": "0.0.1"}))
    with pytest.raises(StateVersionError, match="from layout version 1"):
        check_layout(tmp_path, kind="run dir", current=2, steps={})


@pytest.mark.parametrize("content", ["not json", '{"faasd": "1"}', '{"layout": "one"}', '{"layout": 0}'])
def test_an_unreadable_version_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "VERSION").write_text(content)
    with pytest.raises(StateVersionError, match="not a faasd layout version file"):
        check_layout(tmp_path, kind="data dir", current=1, steps={})
    assert (tmp_path / "VERSION").read_text() == content
