"""gVisor's own checkpoint/restore (``runsc checkpoint`` / ``runsc restore``) of sandboxes under runsc.

gVisor saves the whole sentry (the guest kernel with every process, its memory and its open files) into
one file, ``checkpoint.img``; CRIU is not involved. :func:`faasd.runtime.checkpoint.checkpoint` hands a
runsc sandbox to :func:`checkpoint_gvisor` and :func:`faasd.runtime.restore.restore` restores a
snapshot whose config.json says ``faasd.isolation: gvisor`` under runsc. A capture directory has the
same layout as CRIU's (``criu/`` then holds ``checkpoint.img``), so the snapshot store keeps both kinds
the same way; the kind is the :data:`ISOLATION_ANNOTATION` of the stored config.json.

What this runsc (Debian's 2022-12-19 build) can and cannot do, measured on the reference host:

* ``runsc checkpoint --image-path DIR ID`` works on a running sandbox (python, files in the overlay
  upper, ``--network=none``, ``--host-uds=create``) and **stops** it (state ``stopped``).
* ``--leave-running`` does not work: runsc checkpoints, then destroys the container to restore it and
  fails with ``destroying container: stopping container: context deadline exceeded``; the container is
  gone afterwards. Even when it works, runsc re-creates the sandbox as a new process tree with the
  checkpoint command's stdio, which a :class:`~faasd.runtime.sandbox.Sandbox` cannot adopt. So a gVisor
  capture always stops its source: ``leave_running=True`` is refused with
  :class:`~faasd.errors.IsolationUnsupportedError` before anything is touched.
* ``runsc restore --bundle B --image-path DIR --detach ID`` into a fresh overlay whose lowers are the
  image layers + the captured upper brings the processes back with their memory (a counter continues)
  and their files. The restored sandbox is an ordinary runsc sandbox (exec, destroy, snapshot again).
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from faasd.errors import (
    ConflictError,
    InvalidInputError,
    IsolationUnsupportedError,
    RuntimeFailure,
    StorageFullError,
)
from faasd.runtime.checkpointable import CheckpointSource

ISOLATION_ANNOTATION = "faasd.isolation"
"""config.json annotation recording which backend a capture belongs to (``gvisor``; absent: runc/CRIU)."""

GVISOR = "gvisor"
RUNC = "runc"
IMAGE_FILE = "checkpoint.img"

LEAVE_RUNNING_UNSUPPORTED = (
    "gVisor cannot snapshot a sandbox and keep it running: `runsc checkpoint --leave-running` of this "
    "runsc destroys the container ('destroying container: stopping container: context deadline "
    "exceeded'), so a gVisor snapshot stops its source"
)


def isolation_of_config(config: dict[str, Any]) -> str:
    """``gvisor`` for a config.json captured by :func:`checkpoint_gvisor`, else ``runc`` (CRIU)."""
    ann = config.get("annotations") or {}
    return GVISOR if ann.get(ISOLATION_ANNOTATION) == GVISOR else RUNC


def isolation_of_runtime(runtime_name: str) -> str:
    return GVISOR if runtime_name == "runsc" else RUNC


def runtime_of_isolation(isolation: str) -> Literal["runc", "runsc"]:
    return "runsc" if isolation == GVISOR else "runc"


def check_restore_isolation(snapshot_isolation: str, wanted: str | None, what: str) -> None:
    """Refuse restoring a capture of one backend under the other (a CRIU image is not a gVisor image)."""
    if wanted is None or wanted == snapshot_isolation:
        return
    kind = "a gVisor (runsc checkpoint) image" if snapshot_isolation == GVISOR else "a CRIU process image"
    raise IsolationUnsupportedError(
        f"{what} holds {kind}, which can only be restored with isolation '{snapshot_isolation}', not "
        f"'{wanted}'; restore it with isolation '{snapshot_isolation}' (or omit isolation)",
        isolation=wanted,
    )


async def checkpoint_gvisor(
    src: CheckpointSource, dest: Path, *, leave_running: bool, copy_upper: Callable[[Path, Path], None]
) -> tuple[Path, Path, Path, dict[str, float]]:
    """``runsc checkpoint`` ``src`` into ``dest/criu/checkpoint.img`` (the sandbox stops), copy its upper
    to ``dest/upper`` and its config.json (annotated ``faasd.isolation: gvisor``) to ``dest/bundle``.

    Returns the three directories and the timings. ``dest`` is removed on failure."""
    if leave_running:
        raise IsolationUnsupportedError(
            f"sandbox {src.id}: {LEAVE_RUNNING_UNSUPPORTED}. Under gVisor only instances can be "
            "snapshotted (faasd continues them from the snapshot); use isolation 'runc' for snapshots "
            "of function workers or restored sandboxes",
            isolation=GVISOR,
        )
    if src.upper is None:
        raise InvalidInputError(f"sandbox {src.id} has no overlay upper: it cannot be snapshotted")
    if dest.exists():
        raise InvalidInputError(f"checkpoint destination {dest} already exists")
    state = (await src.runtime.state(src.id)).get("status")
    if state not in ("running", "paused"):
        raise ConflictError(
            f"sandbox {src.id} is {state}; only a running or paused sandbox can be snapshotted"
        )
    image_dir, upper_dir, bundle_dir = dest / "criu", dest / "upper", dest / "bundle"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        image_dir.mkdir(parents=True)
        try:
            await src.runtime.checkpoint(src.id, image_dir)
        except RuntimeFailure as exc:
            raise RuntimeFailure(
                f"gVisor checkpoint of sandbox {src.id} failed: {exc.message}", sandbox=src.id
            ) from exc
        t1 = time.perf_counter()
        timings["dump"] = (t1 - t0) * 1000
        # the sentry is gone: the upper no longer changes, no freeze needed
        await asyncio.to_thread(copy_upper, src.upper, upper_dir)
        bundle_dir.mkdir()
        config = json.loads((src.bundle / "config.json").read_text())
        config.setdefault("annotations", {})[ISOLATION_ANNOTATION] = GVISOR
        (bundle_dir / "config.json").write_text(json.dumps(config, indent=1))
        timings["copy_upper"] = (time.perf_counter() - t1) * 1000
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(
                f"no space left in {dest.parent} while checkpointing gVisor sandbox {src.id}; free space "
                "(delete snapshots, gc) or enlarge the data dir.",
                sandbox=src.id,
            ) from exc
        raise
    timings["total"] = (time.perf_counter() - t0) * 1000
    return image_dir, upper_dir, bundle_dir, timings


def check_image(image_dir: Path) -> None:
    if not (image_dir / IMAGE_FILE).is_file():
        raise InvalidInputError(f"gVisor snapshot image {image_dir / IMAGE_FILE} does not exist")
