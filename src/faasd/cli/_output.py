"""Printing: rich tables for people, ``--json`` for machines, errors in red on stderr.

rich and the SDK are imported only when something is printed with them (``faas`` starts in a fraction
of their import time; ``tests/unit/cli/test_cli_footprint.py`` keeps it so).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

JsonOption = typer.Option("--json", help="Print machine-readable JSON instead of a table.")


def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def text(message: str = "", style: str = "") -> Text:
    from rich.text import Text

    return Text(message, style=style)


def _is_api_object(value: object) -> bool:
    """An SDK object (``msgspec.Struct``; msgspec not loaded yet: nothing can be one)."""
    msgspec = sys.modules.get("msgspec")
    return msgspec is not None and isinstance(value, msgspec.Struct)


def to_jsonable(value: Any) -> Any:
    if _is_api_object(value):
        from faasd.sdk.models import to_builtins

        return to_builtins(value)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def print_json(value: Any, *, compact: bool = False) -> None:
    text = json.dumps(to_jsonable(value), indent=None if compact else 2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing here"
) -> None:
    from rich.table import Table

    rows = list(rows)
    if not rows:
        stderr().print(text(empty, style="dim"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(text(cell_text(v)) for v in row))
    stdout().print(table)


def print_listing(
    value: Any,
    json_: bool,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    empty: str = "nothing here",
) -> None:
    """``value`` as JSON with ``--json``, else ``rows`` as a table (``empty`` on stderr if there are none)."""
    if json_:
        print_json(value)
    else:
        print_table(columns, rows, empty=empty)


def print_done(value: Any, json_: bool, message: str, *, result: str | None = None) -> None:
    """``value`` as JSON with ``--json``, else ``message`` as a success line on stderr and then ``result``
    (e.g. the new object's id, for scripts) on stdout."""
    if json_:
        print_json(value)
        return
    success(message)
    if result is not None:
        typer.echo(result)


def for_each(items: Iterable[str], action: Callable[[str], object], done: str) -> None:
    """``action(item)`` for each item in order, printing ``done.format(item)`` after each one succeeded."""
    for item in items:
        action(item)
        success(done.format(item))


def print_process_result(result: Any, json_: bool, problem: str | None = None) -> None:
    """A finished process (``.stdout``/``.stderr`` text): as JSON with ``--json``, else its stdout and stderr
    written to ours (each flushed, so they do not interleave), then ``problem`` (if any) as an error line."""
    if json_:
        print_json(result)
        return
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    sys.stderr.flush()
    if problem:
        error(problem)


def exit_with(code: int) -> None:
    """Exit the command with a process's exit code (nothing for 0; 1 when it does not fit a shell status)."""
    if code != 0:
        raise typer.Exit(code if 0 < code < 256 else 1)


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def success(message: str) -> None:
    stderr().print(text(message, style="green"))


def info(message: str) -> None:
    stderr().print(text(message, style="dim"))


def error(message: str) -> None:
    line = text("error: ", style="bold red")
    line.append(message, style="red")
    stderr().print(line)


def fail(message: str, code: int = 1) -> NoReturn:
    error(message)
    raise typer.Exit(code)


def write_bytes(data: bytes, *, newline: bool = False) -> None:
    sys.stdout.buffer.write(data)
    if newline and data and not data.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


def read_data(value: str | None) -> bytes | None:
    """``@path`` → the file's bytes, ``-`` → stdin, anything else → the text itself."""
    if value is None:
        return None
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
    return value.encode()


def parse_pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    """``["K=V", ...]`` → dict; raises a usage error naming the bad item."""
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key] = val
    return out
