"""What the ``faas image`` commands share: the typer group, consoles, the local store, helpers."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import typer

from faasd.errors import FaasdError

if TYPE_CHECKING:  # the image store and rich: loaded by the image commands only, not by every `faas` command
    from rich.console import Console

    from faasd.images import ImageStore

image_app = typer.Typer(
    name="image", help="Import, list, inspect and remove images in the local store.", no_args_is_help=True
)


@functools.cache
def console() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True)


@functools.cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _store() -> ImageStore:
    from faasd.config import Settings
    from faasd.images import ImageStore

    return ImageStore(Settings())


def _fail(exc: FaasdError) -> typer.Exit:
    err_console().print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(code=1)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
