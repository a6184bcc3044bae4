"""Versions of the on-disk layouts: ``data_dir`` (content store, layers, images, snapshot store, scratch)
and ``run_dir`` (runc root, sandbox bundles, CRIU work dirs).

Each directory carries a ``VERSION`` file, JSON ``{"layout": N, "faasd": "<version that wrote it>"}``,
checked at daemon start by :func:`check_layouts` the same way as the database schema
(:mod:`faasd.state.migrate`):

* missing: a new directory, or one made before layouts were versioned (= layout 1, today's): stamped;
* older than this faasd's: the registered steps (``DATA_STEPS[n]`` migrates layout ``n`` to ``n + 1``)
  run in order, the file is rewritten after each one (a crash resumes at the step it stopped in, so a step
  must be idempotent);
* newer: :class:`StateVersionError` naming both versions; nothing is touched.

To change a layout: bump ``DATA_LAYOUT`` (or ``RUN_LAYOUT``) and register the step from the old number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from faasd._version import __version__
from faasd.errors import StateVersionError

VERSION_FILE = "VERSION"

DATA_LAYOUT = 1
"""Layout of ``data_dir`` (1: the layout documented in docs/ARCHITECTURE.md, "Filesystem layout")."""
RUN_LAYOUT = 1
"""Layout of ``run_dir`` (1: runc/, sandboxes/<id>/, criu-work/)."""

Step = Callable[[Path], None]
DATA_STEPS: dict[int, Step] = {}
"""``DATA_STEPS[n](data_dir)`` turns layout ``n`` into ``n + 1`` (none yet)."""
RUN_STEPS: dict[int, Step] = {}
"""``RUN_STEPS[n](run_dir)`` turns layout ``n`` into ``n + 1`` (none yet)."""


@dataclass
class LayoutReport:
    path: Path
    found: int | None
    """The version on disk before the check (None: no VERSION file)."""
    now: int
    migrated: list[int] = field(default_factory=list)
    """Steps that ran (``n``: layout ``n`` → ``n + 1``)."""


def read_version(root: Path) -> tuple[int, str] | None:
    """``(layout, faasd version that wrote it)`` of ``root``, None without a VERSION file."""
    path = root / VERSION_FILE
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        layout = doc["layout"]
        if not isinstance(layout, int) or isinstance(layout, bool) or layout < 1:
            raise ValueError(layout)
    except (ValueError, KeyError, TypeError) as exc:
        raise StateVersionError(
            f"{path} is not a faasd layout version file ({exc!r}); it should hold "
            f'{{"layout": <number>, "faasd": "<version>"}}: restore it or remove it if this directory is '
            f"at layout {DATA_LAYOUT}",
            path=str(path),
        ) from exc
    return layout, str(doc.get("faasd", "unknown"))


def write_version(root: Path, layout: int) -> None:
    """Atomically (rename) record ``layout`` as the version of ``root``."""
    tmp = root / f".{VERSION_FILE}.tmp"
    tmp.write_text(json.dumps({"layout": layout, "faasd": __version__}) + "\n")
    os.replace(tmp, root / VERSION_FILE)


def check_layout(root: Path, *, kind: str, current: int, steps: Mapping[int, Step]) -> LayoutReport:
    """Check (and migrate) the layout of ``root`` (``kind`` names it in messages, e.g. "data dir")."""
    found = read_version(root)
    report = LayoutReport(root, found[0] if found else None, current)
    if found is None:
        write_version(root, current)
        return report
    layout, written_by = found
    if layout > current:
        raise StateVersionError(
            f"the {kind} {root} has layout version {layout}, written by faasd {written_by}; this faasd "
            f"{__version__} knows layout versions up to {current}. Run faasd {written_by} or newer, or "
            f"point faasd at another {kind}; faasd never downgrades a layout",
            path=str(root),
            layout=layout,
            supported=current,
        )
    while layout < current:
        step = steps.get(layout)
        if step is None:
            raise StateVersionError(
                f"this faasd {__version__} cannot upgrade the {kind} {root} from layout version {layout} "
                f"(no migration step registered); upgrade through an intermediate faasd release",
                path=str(root),
                layout=layout,
            )
        step(root)
        layout += 1
        write_version(root, layout)
        report.migrated.append(layout - 1)
    return report


def check_layouts(data_dir: Path, run_dir: Path) -> list[LayoutReport]:
    """Daemon start: check (and migrate) ``data_dir`` then ``run_dir``; both must exist."""
    return [
        check_layout(data_dir, kind="data dir", current=DATA_LAYOUT, steps=DATA_STEPS),
        check_layout(run_dir, kind="run dir", current=RUN_LAYOUT, steps=RUN_STEPS),
    ]
