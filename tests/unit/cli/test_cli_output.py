"""The shared printing helpers of the CLI (faasd.cli._output)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import typer

from faasd.cli import _output as out

pytestmark = pytest.mark.unit


def test_print_listing_json_or_table(capsys: pytest.CaptureFixture[str]) -> None:
    items = [{"name": "a", "n": 1.5}]
    out.print_listing(items, True, ["NAME", "N"], [("a", 1.5)])
    assert json.loads(capsys.readouterr().out) == items
    out.print_listing(items, False, ["NAME", "N"], [("a", 1.5)])
    cap = capsys.readouterr()
    assert cap.out.split() == ["NAME", "N", "a", "1.5"]
    out.print_listing([], False, ["NAME"], [], empty="no things")
    cap = capsys.readouterr()
    assert (cap.out, cap.err.strip()) == ("", "no things")


def test_print_done_message_and_result(capsys: pytest.CaptureFixture[str]) -> None:
    out.print_done({"id": "x1"}, False, "created x1", result="x1")
    cap = capsys.readouterr()
    assert (cap.out, cap.err.strip()) == ("x1\n", "created x1")
    out.print_done({"id": "x1"}, True, "created x1", result="x1")
    cap = capsys.readouterr()
    assert json.loads(cap.out) == {"id": "x1"} and cap.err == ""


def test_for_each_stops_at_the_first_failure(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def delete(item: str) -> None:
        if item == "bad":
            raise RuntimeError(item)
        done.append(item)

    with pytest.raises(RuntimeError):
        out.for_each(["a", "bad", "c"], delete, "deleted {}")
    assert done == ["a"]
    assert capsys.readouterr().err.split("\n")[0] == "deleted a"


def test_print_process_result_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    res = SimpleNamespace(stdout="o\n", stderr="e\n")
    out.print_process_result(res, False, "timed out")
    cap = capsys.readouterr()
    assert cap.out == "o\n" and cap.err.splitlines() == ["e", "error: timed out"]
    out.exit_with(0)
    for code, expected in ((3, 3), (300, 1), (-9, 1)):
        with pytest.raises(typer.Exit) as exc:
            out.exit_with(code)
        assert exc.value.exit_code == expected
