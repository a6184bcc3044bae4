"""``faas image ...``: manage the local image store (run as root on the faasd host)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from faasd.cli._image_common import _fail, _human, _store, console, err_console, image_app
from faasd.errors import FaasdError

if TYPE_CHECKING:  # the image store and rich: loaded by the image commands only, not by every `faas` command
    from rich.progress import Progress

    from faasd.images import ProgressEvent


class _Bar:
    """Feeds ProgressEvents from the store into a rich progress bar."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=None)

    def __call__(self, ev: ProgressEvent | object, message: str | None = None) -> None:
        from faasd.images import ProgressEvent

        if message is not None:  # faasd.baseimages reports (phase, message)
            self.progress.update(self.task, description=f"{ev}: {message}")
        elif isinstance(ev, ProgressEvent):
            self.progress.update(
                self.task,
                completed=ev.bytes_done,
                total=ev.bytes_total or None,
                description=f"{ev.phase:<6} {ev.description}",
            )
        else:  # a builder reporting plain messages
            self.progress.update(self.task, description=str(ev))


def _progress() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    )


@image_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="docker-archive / OCI archive tar, or an OCI layout dir")],
    ref: Annotated[str | None, typer.Option("--ref", "-r", help="name:tag to give the image")] = None,
) -> None:
    """Import an image archive (format is detected)."""
    try:
        with _progress() as progress:
            image = _store().import_archive(path, ref=ref, progress=_Bar(progress, f"importing {path.name}"))
    except FaasdError as exc:
        raise _fail(exc) from None
    console().print(
        f"imported [bold]{', '.join(image.refs) or image.short_id}[/bold] "
        f"({image.short_id}, {len(image.layers)} layers, {_human(image.size)})"
    )


@image_app.command("ls")
def ls(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only ids")] = False) -> None:
    """List images."""
    images = _store().list()
    if quiet:
        for img in images:
            console().print(img.short_id)
        return
    from rich.table import Table

    table = Table("REF", "ID", "LAYERS", "SIZE", "IN USE")
    for img in images:
        for ref in img.refs or ["<none>"]:
            table.add_row(ref, img.short_id, str(len(img.layers)), _human(img.size), str(len(img.leases)))
    console().print(table)


@image_app.command("inspect")
def inspect(ref: str) -> None:
    """Show an image's metadata as JSON."""
    try:
        store = _store()
        image = store.get(ref)
        data: dict[str, Any] = image.to_dict()
        data["layer_dirs"] = [str(p) for p in store.layer_dirs(image)]
    except FaasdError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(data, indent=2))


@image_app.command("tag")
def tag(ref: str, new_ref: str) -> None:
    """Give an image (by ref or id) another ref."""
    try:
        image = _store().tag(ref, new_ref)
    except FaasdError as exc:
        raise _fail(exc) from None
    console().print(f"tagged {image.short_id} as {new_ref}")


@image_app.command("rm")
def rm(
    ref: str, force: Annotated[bool, typer.Option("--force", "-f", help="even if in use")] = False
) -> None:
    """Remove a ref (or an image by id). Space is freed by 'faas image gc'."""
    try:
        removed = _store().remove(ref, force=force)
    except FaasdError as exc:
        raise _fail(exc) from None
    for r in removed or [ref]:
        console().print(f"untagged {r}")


@image_app.command("gc")
def gc() -> None:
    """Delete blobs and unpacked layers no image uses."""
    report = _store().gc()
    console().print(
        f"removed {len(report.removed_images)} images, {len(report.removed_blobs)} blobs, "
        f"{len(report.removed_layers)} layers; freed {_human(report.freed_bytes)}"
    )


@image_app.command("build-base")
def build_base(
    name: str,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="rebuild even if cached")] = False,
) -> None:
    """Build a base runtime image (debootstrap) and import it."""
    try:
        base = importlib.import_module("faasd.baseimages")
    except ImportError as exc:
        err_console().print(f"[red]error:[/red] base image builder is not available ({exc})")
        raise typer.Exit(code=1) from None
    store = _store()
    try:
        with _progress() as progress:
            kwargs: dict[str, Any] = {"progress": _Bar(progress, f"building {name}")}
            if rebuild:
                kwargs["rebuild"] = True
            image = base.build_base(name, store, **kwargs)
    except FaasdError as exc:
        raise _fail(exc) from None
    refs = ", ".join(getattr(image, "refs", []) or [])
    console().print(f"built [bold]{refs or name}[/bold]")


from faasd.cli import image_registry as _image_registry  # noqa: E402, F401  (registers pull / push)
