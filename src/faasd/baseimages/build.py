"""Building a base image's OCI archive: one builder per cache dir (file lock), umoci bundle, debootstrap,
trim, smoke test, repack + config, atomic archive in ``cache_dir/base``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from faasd.baseimages.cache import _valid_archive, archive_path, stale_archives
from faasd.baseimages.debootstrap import _debootstrap, _dpkg_version, _sanitise, _upgrade, upstream_version
from faasd.baseimages.process import _remove_workdir, _run
from faasd.baseimages.progress import ProgressCallback, _noop
from faasd.baseimages.recipes import (
    BUILDER_VERSION,
    DEFAULT_MIRROR,
    LABEL_CREATED,
    LABEL_NAME,
    LABEL_PREFIX,
    LABEL_RECIPE_HASH,
    LABEL_VERSION,
    MIRROR_ENV,
    BaseRecipe,
)
from faasd.baseimages.smoke import smoke_test
from faasd.baseimages.trim import _tree_size, apply_trim_rules
from faasd.errors import RuntimeFailure
from faasd.filelock import flock, open_lock_file

_LOCK_NAME = ".lock"
_BUILD_PREFIX = ".build-"
_TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def _build_lock(base_dir: Path, progress: ProgressCallback) -> Iterator[None]:
    """One builder at a time per cache dir (2 cores; and concurrent set-ups must not double-build)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(base_dir / _LOCK_NAME, 0o644)
    try:
        if not flock(fd, blocking=False):
            progress("lock", f"waiting for another base image build in {base_dir}")
            flock(fd)
        # Holding the lock: any leftover build dir belongs to a builder that died (SIGKILL, power loss).
        for stale in base_dir.iterdir():
            if stale.name.startswith((_BUILD_PREFIX, _TMP_PREFIX)):
                progress("lock", f"removing leftovers of an interrupted build: {stale.name}")
                if stale.is_dir() and not stale.is_symlink():
                    _remove_workdir(stale)
                else:
                    stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------- building


@dataclass
class BuildResult:
    recipe: BaseRecipe
    archive: Path
    built: bool
    """False when the cached archive was reused."""
    version: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    archive_bytes: int = 0
    rootfs_bytes: int = 0
    trimmed_bytes: int = 0


def _tree_bytes(root: Path) -> int:
    return _tree_size(root)[1]


def _write_oci_archive(layout: Path, dest: Path, full_name: str | None = None) -> None:
    """Tar the OCI layout into ``dest`` atomically (tmp file in the same dir, fsync, rename)."""
    tmp = dest.with_name(f"{_TMP_PREFIX}{dest.name}.{uuid.uuid4().hex[:8]}")
    if full_name:
        # umoci names the manifest by tag only ("3.11"); add the full name for importers
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for desc in index.get("manifests", []):
            desc.setdefault("annotations", {})["io.containerd.image.name"] = full_name
        index_path.write_text(json.dumps(index, separators=(",", ":")))
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(layout.rglob("*")):
                    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o755 if info.isdir() else 0o644
                    if info.isfile():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        tmp.unlink(missing_ok=True)


def build_archive(
    recipe: BaseRecipe,
    cache_dir: Path,
    *,
    rebuild: bool = False,
    mirror: str | None = None,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build (or reuse) the OCI archive of ``recipe`` in ``cache_dir/base``. Needs root."""
    progress = progress or _noop
    base_dir = Path(cache_dir) / "base"
    dest = archive_path(recipe, cache_dir)
    if not rebuild and _valid_archive(dest):
        return BuildResult(recipe, dest, built=False, archive_bytes=dest.stat().st_size)
    if os.geteuid() != 0:
        raise RuntimeFailure(
            f"building the {recipe.name!r} base image needs root (debootstrap); run "
            f"`sudo python -m faasd.baseimages ensure` once, the archive is then cached in {base_dir}"
        )
    for tool in ("debootstrap", "umoci", "chroot", "unshare"):
        if shutil.which(tool) is None:
            raise RuntimeFailure(f"{tool} is not installed; run scripts/setup-system.sh")
    mirror = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    with _build_lock(base_dir, progress):
        if not rebuild and _valid_archive(dest):  # built by whoever held the lock before us
            return BuildResult(recipe, dest, built=False, archive_bytes=dest.stat().st_size)
        result = BuildResult(recipe, dest, built=True)
        work = base_dir / f"{_BUILD_PREFIX}{recipe.name}-{uuid.uuid4().hex[:8]}"
        work.mkdir(mode=0o700)
        try:
            _build_into(recipe, work, dest, base_dir / "debs", mirror, progress, result)
        finally:
            progress("cleanup", f"removing {work}")
            _remove_workdir(work)
        for old in stale_archives(recipe, cache_dir):
            progress("archive", f"removing archive of an older recipe: {old.name}")
            old.unlink(missing_ok=True)
    return result


def _build_into(
    recipe: BaseRecipe,
    work: Path,
    dest: Path,
    debs: Path,
    mirror: str,
    progress: ProgressCallback,
    result: BuildResult,
) -> None:
    layout, bundle = work / "layout", work / "bundle"
    image = f"{layout}:{recipe.version_tag}"
    rootfs = bundle / "rootfs"
    debs.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    _run(["umoci", "init", "--layout", str(layout)], what="umoci init")
    _run(["umoci", "new", "--image", image], what="umoci new")
    _run(["umoci", "unpack", "--image", image, str(bundle)], what="umoci unpack")
    _debootstrap(recipe, rootfs, debs, work / "debootstrap.log", mirror, progress)
    result.timings["debootstrap"] = time.monotonic() - t0
    if recipe.security_updates:
        tu = time.monotonic()
        _upgrade(recipe, rootfs, mirror, work / "debootstrap.log", debs, progress)
        result.timings["upgrade"] = time.monotonic() - tu

    t1 = time.monotonic()
    deb_version = _dpkg_version(rootfs, recipe.version_package)
    result.version = upstream_version(deb_version)
    if not (result.version == recipe.version_tag or result.version.startswith(recipe.version_tag + ".")):
        raise RuntimeFailure(
            f"{recipe.suite} now ships {recipe.version_package} {deb_version}, but the {recipe.name!r} "
            f"recipe publishes it as {recipe.version_tag}; update version_tag in faasd.baseimages.recipes"
        )
    before = _tree_bytes(rootfs)
    report = apply_trim_rules(rootfs, recipe.trim_rules)
    _sanitise(recipe, rootfs)
    result.rootfs_bytes = _tree_bytes(rootfs)
    result.trimmed_bytes = report.removed_bytes
    progress(
        "trim",
        f"removed {report.removed_entries} entries, {report.removed_bytes / 1e6:.1f} MB "
        f"({before / 1e6:.1f} → {result.rootfs_bytes / 1e6:.1f} MB)",
    )
    out = smoke_test(recipe, rootfs)
    progress("check", f"{' '.join(recipe.smoke_test[:1])} works: {out}")
    result.timings["trim"] = time.monotonic() - t1

    t2 = time.monotonic()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    progress("pack", "umoci repack (gzip layer)")
    _run(
        [
            "umoci",
            "repack",
            "--image",
            image,
            "--history.created_by",
            f"faasd base builder {BUILDER_VERSION}: debootstrap --variant="
            f"{recipe.variant} --include={','.join(recipe.packages)} {recipe.suite}",
            "--history.created",
            created,
            str(bundle),
        ],
        what="umoci repack",
        timeout=900,
    )
    labels = {
        LABEL_NAME: recipe.name,
        LABEL_RECIPE_HASH: recipe.recipe_hash(),
        LABEL_VERSION: result.version,
        LABEL_PREFIX + "builder-version": BUILDER_VERSION,
        LABEL_PREFIX + "suite": recipe.suite,
        LABEL_PREFIX + "packages": ",".join(recipe.packages),
        LABEL_CREATED: created,
        "org.opencontainers.image.title": recipe.repository,
        "org.opencontainers.image.version": result.version,
    }
    cfg = [
        "umoci",
        "config",
        "--image",
        image,
        "--no-history",
        "--created",
        created,
        "--author",
        "faasd",
        "--config.workingdir",
        recipe.working_dir,
    ]
    for e in recipe.image_env:
        cfg += ["--config.env", e]
    for c in recipe.cmd:
        cfg += ["--config.cmd", c]
    for k, v in labels.items():
        cfg += ["--config.label", f"{k}={v}"]
    _run(cfg, what="umoci config")
    _run(["umoci", "gc", "--layout", str(layout)], what="umoci gc")
    result.timings["pack"] = time.monotonic() - t2

    t3 = time.monotonic()
    _write_oci_archive(layout, dest, full_name=recipe.refs[0])
    result.archive_bytes = dest.stat().st_size
    result.timings["archive"] = time.monotonic() - t3
    progress("archive", f"{dest} ({result.archive_bytes / 1e6:.1f} MB)")
