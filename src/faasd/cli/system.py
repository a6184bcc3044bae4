"""Platform commands: ``up`` (run the daemon here), ``health``, ``metrics``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from faasd.cli import _output as out
from faasd.cli._context import client


def health(ctx: typer.Context, json_: Annotated[bool, out.JsonOption] = False) -> None:
    """Check that the daemon answers."""
    with client(ctx) as c:
        result = c.health()
        url = c.base_url
    out.print_done(result, json_, f"{url}: {result.status} (faasd {result.version})")


def metrics(ctx: typer.Context) -> None:
    """Print the Prometheus metrics text."""
    with client(ctx) as c:
        sys.stdout.write(c.metrics())


def up(
    host: Annotated[
        str | None, typer.Option(help="Listen address [default: FAASD_HOST or 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: FAASD_PORT or 8080]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory [default: /var/lib/faasd]")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Volatile directory [default: /run/faasd]")] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept unauthenticated requests (local use only).")
    ] = False,
    skip_base_images: Annotated[
        bool, typer.Option("--skip-base-images", help="Do not build/import the base images first.")
    ] = False,
) -> None:
    """Run the faasd daemon in the foreground (builds the base images first if needed)."""
    from faasd.cli import _up

    code = _up.run(
        host=host,
        port=port,
        data_dir=data_dir,
        run_dir=run_dir,
        no_auth=no_auth,
        skip_base_images=skip_base_images,
    )
    if code:
        raise typer.Exit(code)
