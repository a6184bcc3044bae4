"""``faas image pull`` / ``faas image push``: the local image store and OCI registries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from faasd.cli._image_common import _fail, _human, _store, console, err_console, image_app
from faasd.errors import FaasdError

if TYPE_CHECKING:  # loaded by pull / push only
    from rich.progress import Progress, TaskID

    from faasd.images.registry import PullEvent


class _Bars:
    """One rich bar per blob (download or upload) and one for unpacking, fed by PullEvents."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def _task(self, key: str, label: str, total: int | None) -> TaskID:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(label, total=total)
        return self.tasks[key]

    def __call__(self, ev: PullEvent) -> None:
        if ev.phase in ("download", "upload") and ev.digest:
            verb = "pull" if ev.phase == "download" else "push"
            task = self._task(ev.digest, f"{verb} {ev.digest[7:19]}", ev.total)
            self.progress.update(task, completed=ev.done, total=ev.total)
        elif ev.phase == "unpack":
            task = self._task("unpack", "unpack", None)
            self.progress.update(task, completed=ev.done, description=f"unpack {ev.description}")
        elif ev.phase == "resolve":
            self._task("resolve", ev.description, None)


def _bars() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    )


@image_app.command("pull")
def pull(
    ref: Annotated[str, typer.Argument(help="image reference, e.g. alpine:3.19 or host:5000/team/app:v1")],
) -> None:
    """Pull an image from its registry (Docker naming: 'alpine' is docker.io/library/alpine:latest).

    Credentials come from $DOCKER_CONFIG/config.json, ~/.docker/config.json or FAASD_REGISTRY_AUTH_FILE.
    Without network access, use 'faas image import FILE --ref REF' instead.
    """
    import asyncio

    from faasd.config import Settings
    from faasd.images.registry import Puller, options_from_settings

    settings = Settings()
    try:
        with _bars() as progress:
            image = asyncio.run(Puller(_store(), options_from_settings(settings)).pull(ref, _Bars(progress)))
    except FaasdError as exc:
        raise _fail(exc) from None
    console().print(
        f"pulled [bold]{', '.join(image.refs) or ref}[/bold] "
        f"({image.short_id}, {len(image.layers)} layers, {_human(image.size)})"
    )


@image_app.command("push")
def push(
    ref: Annotated[str, typer.Argument(help="where to push, e.g. host:5000/team/app:v1")],
    source: Annotated[
        str | None, typer.Option("--from", help="local image to push (default: the one named REF)")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", help="upload blobs in chunks of this many bytes")
    ] = None,
) -> None:
    """Push an image from the local store to a registry."""
    import asyncio

    from faasd.config import Settings
    from faasd.images.registry import Pusher, options_from_settings

    settings = Settings()
    try:
        with _bars() as progress:
            pusher = Pusher(_store(), options_from_settings(settings), chunk_size=chunk_size)
            result = asyncio.run(pusher.push(ref, source, _Bars(progress)))
    except FaasdError as exc:
        raise _fail(exc) from None
    console().print(
        f"pushed [bold]{result.ref}[/bold] ({result.digest}): {len(result.uploaded)} blobs uploaded, "
        f"{len(result.mounted)} mounted, {len(result.existing)} already there"
    )
