"""``faasd``: the platform daemon.

Start-up: settings → directories (layout versions checked, ``faasd.state.layout``) → database (schema
upgraded to this faasd's revision, ``faasd.state.migrate``) → image store (+ base images) → sandbox
manager → platform (reconciliation: re-queue interrupted async executions, re-adopt the instances and
restored sandboxes a previous daemon left running, remove the other orphaned sandboxes) → HTTP server.
SIGTERM/SIGINT shut down gracefully: the async loop stops, pools close; instances and restored sandboxes
keep running for the next daemon (``FAASD_KEEP_SANDBOXES_ON_SHUTDOWN=false``: they are stopped too,
instances keep their files). State written by a newer faasd stops the start with exit status 2 and a
message saying what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from faasd._version import __version__
from faasd.api.app import create_app
from faasd.api.logging import setup_logging
from faasd.config import Settings
from faasd.errors import StateVersionError
from faasd.platform.core import Platform
from faasd.platform.runtime_adapter import RuntimeWorkerFactory
from faasd.state import Database
from faasd.state.layout import check_layouts

log = logging.getLogger("faasd.daemon")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="faasd", description="faasd platform daemon (settings also from FAASD_*)"
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--database-url")
    p.add_argument("--no-auth", action="store_true", help="accept unauthenticated requests (local use only)")
    p.add_argument(
        "--base-images",
        default=os.environ.get("FAASD_BASE_IMAGES", "python,node"),
        help="base images to ensure at start-up (comma-separated; 'none' to skip)",
    )
    p.add_argument("--log-level", default=os.environ.get("FAASD_LOG_LEVEL", "INFO"))
    p.add_argument("--version", action="version", version=f"faasd {__version__}")
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for field in ("host", "port", "data_dir", "run_dir", "cache_dir", "database_url"):
        v = getattr(args, field)
        if v is not None:
            overrides[field] = v
    if args.no_auth:
        overrides["auth"] = False
    return Settings(**overrides)  # type: ignore[arg-type]


def ensure_dirs(settings: Settings) -> None:
    for d, mode in ((settings.data_dir, 0o700), (settings.run_dir, 0o700), (settings.cache_dir, 0o755)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)


def build_platform(settings: Settings, base_images: Sequence[str] = ()) -> Platform:
    from faasd.images.store import ImageStore
    from faasd.runtime.sandbox import SandboxManager

    db = Database(settings.db_url, background_checkpoint=True)
    db.create_all()
    store = ImageStore(settings)
    if base_images:
        try:
            from faasd.baseimages import ensure_base_images
        except ImportError:
            log.warning("faasd.baseimages.ensure_base_images is not available; skipping base images")
        else:
            try:
                images = ensure_base_images(
                    store,
                    list(base_images),
                    settings=settings,
                    progress=lambda phase, msg: log.info("base image %s: %s", phase, msg),
                )
                log.info("base images ready: %s", {k: v.id for k, v in images.items()})
            except Exception:
                log.exception("could not prepare the base images; functions on them will fail to start")
    manager = SandboxManager(settings)
    factory = RuntimeWorkerFactory(settings, manager, store)
    return Platform(settings, factory, db=db, images=store, sandboxes=manager, gateways=factory.gateways)


GC_THRESHOLDS = (10_000, 20, 20)
"""The collector's thresholds once the daemon is up (CPython's are 700, 10, 10). Under gateway load the
journal holds up to 512 rows (a few thousand containers) between writes: at 700 that alone set off a
young-generation collection every few dozen requests, each walking what the journal held and promoting it
to the older generations. Measured on the daemon's handling of worker reports (the records of handed
requests, ``record_served`` to SQLite, in one process, 40,000 records): the collector took 5.7-7.1 us per
record with the defaults (~13 % of the path), 1.4-1.6 us after :func:`settle_heap`'s freeze and none with
these thresholds (no collection ran: what the journal holds never reaches 10,000)."""


def settle_heap() -> None:
    """Once start-up is done: collect its garbage, hand the freed heap back to the OS (glibc keeps it
    otherwise and the idle daemon's RSS would carry a few MB), move what survives (modules, classes, the
    platform: ~120,000-140,000 objects) out of the collector's reach for good (``gc.freeze``) and raise its
    thresholds (:data:`GC_THRESHOLDS`). Without the freeze each full collection walks those objects again:
    120-140 ms each on this VM, a pause of every request in flight (two in a 40,000-request ``hey`` run of
    the gateway); after it ~17 ms. Two daemons side by side under ``hey`` (8 in flight, alternating, the
    sides swapped between two runs: the second daemon started was ~14 % faster either way): the daemon's CPU
    per handed request 50-54 us against 57-58 us before."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    setup_logging(args.log_level)
    settings = build_settings(args)
    ensure_dirs(settings)
    base = (
        [] if args.base_images.strip() in ("", "none") else [n.strip() for n in args.base_images.split(",")]
    )
    try:
        for report in check_layouts(settings.data_dir, settings.run_dir):
            if report.migrated:
                log.info("upgraded the layout of %s to version %d", report.path, report.now)
        platform = build_platform(settings, base)
    except StateVersionError as exc:
        log.error("faasd cannot start: %s", exc.message)
        return 2
    if settings.auth:
        key_file = settings.data_dir / "admin.key"
        if platform.keys.bootstrap_admin(key_file):
            log.info("created the bootstrap admin API key in %s (mode 0600)", key_file)
    else:
        log.warning(
            "authentication is DISABLED (auth=false): anyone who can reach %s:%d controls faasd",
            settings.host,
            settings.port,
        )
    app = create_app(settings, platform)
    settle_heap()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        access_log=False,
        http=app.state.handoff.protocol_class,  # invocations' connections may go to warm workers
    )
    server = uvicorn.Server(config)
    log.info("faasd %s listening on http://%s:%d", __version__, settings.host, settings.port)
    server.run()
    platform.db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
