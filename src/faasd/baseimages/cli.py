"""``python -m faasd.baseimages {ensure,build,hash}``: what set-up scripts and CI call."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO

from faasd.baseimages.build import build_archive
from faasd.baseimages.cache import archive_path
from faasd.baseimages.ensure import ensure_base_images
from faasd.baseimages.progress import ProgressCallback, _prefixed
from faasd.baseimages.recipes import DEFAULT_NAMES, get_recipe
from faasd.config import Settings
from faasd.errors import FaasdError

_DESCRIPTION = "Base runtime images (faasd/python, faasd/node) built locally with debootstrap."


def _print_progress(stream: IO[str]) -> ProgressCallback:
    start = time.monotonic()

    def cb(phase: str, message: str) -> None:
        print(f"[base {time.monotonic() - start:6.1f}s] {phase:<11} {message}", file=stream, flush=True)

    return cb


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faasd.baseimages", description=_DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    ens = sub.add_parser("ensure", help="build what is missing and import it into the image store")
    bld = sub.add_parser("build", help="build (or reuse) the cached OCI archives only, no store needed")
    hsh = sub.add_parser("hash", help="print '<name> <recipe-hash> <archive>' (e.g. as a CI cache key)")
    for p in (ens, bld, hsh):
        p.add_argument("names", nargs="*", default=list(DEFAULT_NAMES), help="python, node (default: both)")
    for p in (ens, bld):
        p.add_argument("--rebuild", action="store_true", help="ignore the cached archive")
    args = parser.parse_args(argv)
    settings = Settings()
    progress = _print_progress(sys.stdout)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up the build dir on `kill` too
    try:
        recipes = [get_recipe(n) for n in args.names]
        if args.command == "hash":
            for r in recipes:
                print(r.name, r.recipe_hash(), archive_path(r, settings.cache_dir))
        elif args.command == "build":
            for r in recipes:
                t = time.monotonic()
                res = build_archive(
                    r, settings.cache_dir, rebuild=args.rebuild, progress=_prefixed(progress, r.name)
                )
                what = "built" if res.built else "cached"
                progress(
                    "done",
                    f"{r.name}: {what} {res.archive} ({res.archive_bytes / 1e6:.1f} MB) "
                    f"in {time.monotonic() - t:.1f} s",
                )
        else:
            from faasd.images.store import ImageStore

            store = ImageStore(settings)
            images = ensure_base_images(
                store, args.names, settings=settings, rebuild=args.rebuild, progress=progress
            )
            for name, image in images.items():
                print(f"{name}: {', '.join(sorted(image.refs))} {image.id}")
    except KeyboardInterrupt:
        print("interrupted; build directory removed", file=sys.stderr)
        return 130
    except FaasdError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0
