"""``faas up``: ensure the base images with a rich progress display, then run the daemon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from faasd.cli import _output as out
from faasd.config import Settings


def settings_for(
    host: str | None, port: int | None, data_dir: Path | None, run_dir: Path | None, no_auth: bool
) -> Settings:
    overrides: dict[str, Any] = {
        k: v
        for k, v in (("host", host), ("port", port), ("data_dir", data_dir), ("run_dir", run_dir))
        if v is not None
    }
    if no_auth:
        overrides["auth"] = False
    return Settings(**overrides)


def ensure_base_images(settings: Settings) -> None:
    from faasd.baseimages import ensure_base_images as ensure
    from faasd.images.store import ImageStore

    store = ImageStore(settings)
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[phase]:<11}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out.stderr(),
        transient=False,
    ) as progress:
        task = progress.add_task("checking base images", phase="check", total=None)

        def on_progress(phase: str, message: str) -> None:
            progress.update(task, description=message[:200], phase=phase)
            if phase == "done":
                progress.console.print(f"[green]✓[/green] {escape(message)}")

        images = ensure(store, progress=on_progress)
        progress.update(task, description=f"{len(images)} base images ready", phase="ready")
    out.info(f"base images ready in {time.monotonic() - started:.1f} s: " + ", ".join(sorted(images)))


def daemon_argv(
    host: str | None, port: int | None, data_dir: Path | None, run_dir: Path | None, no_auth: bool
) -> list[str]:
    """Arguments for ``faasd.daemon.main``; base images are already ensured here, so it skips them."""
    argv = ["--base-images", "none"]
    for flag, value in (("--host", host), ("--port", port), ("--data-dir", data_dir), ("--run-dir", run_dir)):
        if value is not None:
            argv += [flag, str(value)]
    if no_auth:
        argv.append("--no-auth")
    return argv


def run(
    *,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    run_dir: Path | None,
    no_auth: bool,
    skip_base_images: bool,
) -> int:
    settings = settings_for(host, port, data_dir, run_dir, no_auth)
    if not skip_base_images:
        for d in (settings.data_dir, settings.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        ensure_base_images(settings)
    from faasd.daemon import main as daemon_main

    out.info(
        f"starting faasd on http://{settings.host}:{settings.port} (data {settings.data_dir}); "
        "Ctrl-C stops it"
    )
    try:
        return daemon_main(daemon_argv(host, port, data_dir, run_dir, no_auth))
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: that is a clean stop
        out.info("faasd stopped")
        return 0
