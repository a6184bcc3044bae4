"""Per-sandbox root filesystems: overlayfs over read-only image layers with a size-bounded upper.

Layout inside ``sandbox_dir`` (the sandbox bundle)::

    rootfs/          merged view (overlay mount point, or the flat copy)
    scratch/         size-bounded filesystem holding the writable layer (tmpfs, or a loop-mounted ext4)
      upper/         overlay upperdir: everything the sandbox wrote (what snapshots capture)
      work/          overlay workdir
    scratch.img      backing file of the loop backend (only with backend "loop"; or in ``image_dir``)
    rootfs.json      how it was mounted, so another process can unmount it after a crash

Size bound. The upper lives on its own filesystem so that writing past ``size_mb`` fails with ENOSPC
inside the sandbox and the host disk is unaffected. Two backends:

* ``tmpfs``: one mount(2) (< 1 ms). Pages written there are charged to the memory cgroup of the
  *writing* task, i.e. the container, so files in the upper also count against the sandbox's memory
  limit (as Docker's tmpfs mounts do): filling it past the free memory is an OOM kill, not ENOSPC.
* ``loop``: a sparse file formatted ext4 without journal and loop-mounted (~20-25 ms). Data goes to the
  host disk and page cache is reclaimable, so the disk limit is really a disk limit (ENOSPC at size_mb).

``backend="auto"`` (:func:`choose_backend`) takes tmpfs only when the whole disk fits comfortably in the
memory the pages are charged to (``size_mb <= memory_mb / 2`` and ``<= TMPFS_MAX_MB``), loop otherwise.

Fallback. If the overlay mount fails (e.g. lowers on a filesystem overlayfs refuses), the lowers are
flat-copied (``cp -a --reflink=auto``, lowest first, applying whiteouts and opaque dirs) into
``rootfs/``; that copy is not size-bounded and ``upper`` is then ``None``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from faasd.errors import InvalidInputError, RuntimeFailure, StorageFullError
from faasd.rootfs import idmap, loopdev, mounts
from faasd.rootfs.idmap import IdMap

log = logging.getLogger(__name__)

Backend = Literal["tmpfs", "loop", "auto"]
TMPFS_MAX_MB = 1024
"""``backend="auto"`` never uses tmpfs above this size (a loop-mounted ext4 file instead)."""


def choose_backend(
    size_mb: int | None, backend: Backend = "auto", memory_mb: int | None = None
) -> Literal["tmpfs", "loop", "none"]:
    """The backend :meth:`OverlayRootfs.mount` uses: ``"none"`` (unbounded), ``"tmpfs"`` or ``"loop"``.

    ``auto`` picks tmpfs only if filling the whole disk cannot crowd out the process: ``size_mb`` at most
    half of ``memory_mb`` (the memory limit its pages are charged to; ``None`` = no memory limit) and at
    most ``TMPFS_MAX_MB``. Otherwise a full disk would be reported as an OOM kill instead of ENOSPC.
    """
    if size_mb is None:
        return "none"
    if backend == "tmpfs" or backend == "loop":
        return backend
    if size_mb > TMPFS_MAX_MB or (memory_mb is not None and size_mb * 2 > memory_mb):
        return "loop"
    return "tmpfs"

_OPAQUE_XATTR = "trusted.overlay.opaque"
_MOUNT_DATA_MAX = 3800  # mount(2) data is limited to one page; keep a margin
_UNSAFE = (",", ":", "\\", "=")


@dataclass
class OverlayRootfs:
    """A mounted sandbox root filesystem. Create with :meth:`mount`; release with :meth:`unmount`."""

    sandbox_dir: Path
    path: Path
    upper: Path | None
    work: Path | None
    scratch: Path | None
    mode: Literal["overlay", "copy"]
    backend: Literal["tmpfs", "loop", "none"]
    size_mb: int | None
    lowers: list[Path] = field(default_factory=list)
    _mounted: bool = True

    # ------------------------------------------------------------------ mount
    @classmethod
    def mount(
        cls,
        lowers: Sequence[Path],
        sandbox_dir: Path,
        size_mb: int | None,
        *,
        backend: Backend = "auto",
        allow_copy_fallback: bool = True,
        image_dir: Path | None = None,
        memory_mb: int | None = None,
        idmap: IdMap | None = None,
    ) -> OverlayRootfs:
        """Mount ``lowers`` (lowest first) read-only with a writable upper bounded to ``size_mb`` MiB.

        ``size_mb=None`` leaves the upper unbounded (on the host filesystem of ``sandbox_dir``).
        ``memory_mb``: the memory limit of the processes that will write the upper (for ``backend="auto"``,
        see :func:`choose_backend`). On any failure everything done so far is undone before the exception
        propagates.
        ``idmap``: the sandbox runs in a user namespace mapping its ids ``0..size-1`` to ``host_id..``;
        the lowers and the upper are idmapped views (:mod:`faasd.rootfs.idmap`), so the merged view shows
        the image's files shifted into that range while the upper stores unshifted ids. No copy fallback
        then (a flat copy would have to be chowned).
        """
        lowers = [Path(p) for p in lowers]
        if not lowers:
            raise InvalidInputError("a root filesystem needs at least one lower layer directory")
        for low in lowers:
            if not low.is_dir():
                raise InvalidInputError(f"lower layer {low} is not a directory; is the image unpacked?")
        if size_mb is not None and size_mb < 1:
            raise InvalidInputError(f"disk size must be at least 1 MiB, got {size_mb}")
        sandbox_dir = Path(sandbox_dir)
        sandbox_dir.mkdir(parents=True, exist_ok=True)
        merged = sandbox_dir / "rootfs"
        scratch = sandbox_dir / "scratch"
        chosen = choose_backend(size_mb, backend, memory_mb)
        merged.mkdir(exist_ok=True)
        scratch.mkdir(exist_ok=True)
        try:
            if chosen == "tmpfs":
                mounts.mount(
                    "faasd-upper",
                    scratch,
                    "tmpfs",
                    mounts.MS_NOSUID | mounts.MS_NODEV,
                    f"size={size_mb}m,mode=0755",
                )
            elif chosen == "loop":
                image = (
                    (Path(image_dir) / f"{sandbox_dir.name}.scratch.img")
                    if image_dir
                    else (sandbox_dir / "scratch.img")
                )
                image.parent.mkdir(parents=True, exist_ok=True)
                (sandbox_dir / "rootfs.json").write_text(json.dumps({"image": str(image)}))
                _mount_loop(
                    image, scratch, size_mb or 0, (image_dir or sandbox_dir.parent) / ".scratch-templates"
                )
            upper, work = scratch / "upper", scratch / "work"
            upper.mkdir()
            work.mkdir()
            try:
                _mount_overlay(lowers, upper, work, merged, idmap)
            except OSError as exc:
                if not allow_copy_fallback or idmap is not None:
                    raise RuntimeFailure(f"overlay mount of {len(lowers)} layers failed: {exc}") from exc
                # Fallback: flat copy into rootfs/ (unbounded); the scratch fs is not needed then.
                mounts.unmount_all_under(scratch)
                shutil.rmtree(scratch, ignore_errors=True)
                _flat_copy(lowers, merged)
                rootfs = cls(sandbox_dir, merged, None, None, None, "copy", "none", size_mb, lowers)
                rootfs._write_state()
                return rootfs
            rootfs = cls(sandbox_dir, merged, upper, work, scratch, "overlay", chosen, size_mb, lowers)
            rootfs._write_state()
            return rootfs
        except BaseException:
            cls.unmount_dir(sandbox_dir)
            for p in (merged, scratch):
                shutil.rmtree(p, ignore_errors=True)
            raise

    @classmethod
    def attach(cls, sandbox_dir: Path) -> OverlayRootfs:
        """The rootfs another process (a daemon that died or restarted) mounted in ``sandbox_dir``, as
        :meth:`mount` returned it there, from its ``rootfs.json``. Nothing is mounted or changed.

        Raises :class:`RuntimeFailure` when the state file is missing or unreadable, or the merged view
        (overlay mode) is no longer mounted."""
        sandbox_dir = Path(sandbox_dir)
        try:
            state = json.loads((sandbox_dir / "rootfs.json").read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(
                f"no rootfs state in {sandbox_dir} ({exc}); it cannot be re-attached"
            ) from exc
        merged, scratch = sandbox_dir / "rootfs", sandbox_dir / "scratch"
        mode = state.get("mode")
        backend = state.get("backend")
        lowers = [Path(p) for p in state.get("lowers") or []]
        size_mb = state.get("size_mb")
        if mode == "copy":
            return cls(sandbox_dir, merged, None, None, None, "copy", "none", size_mb, lowers)
        if mode != "overlay" or backend not in ("tmpfs", "loop", "none"):
            raise RuntimeFailure(f"unknown rootfs state in {sandbox_dir}: {state}")
        if not mounts.is_mountpoint(merged):
            raise RuntimeFailure(f"the overlay of {sandbox_dir} is not mounted any more")
        return cls(
            sandbox_dir, merged, scratch / "upper", scratch / "work", scratch, "overlay", backend, size_mb,
            lowers,
        )

    # ---------------------------------------------------------------- unmount
    def unmount(self) -> None:
        """Unmount the merged view and the scratch fs and remove them. Idempotent."""
        self.unmount_dir(self.sandbox_dir)
        for p in (self.path, self.scratch):
            if p is not None:
                shutil.rmtree(p, ignore_errors=True)
        self._mounted = False

    @property
    def mounted(self) -> bool:
        return self._mounted

    @staticmethod
    def unmount_dir(sandbox_dir: Path) -> None:
        """Unmount every mount below ``sandbox_dir`` (crash reconciliation: no object needed)."""
        sandbox_dir = Path(sandbox_dir)
        failed = mounts.unmount_all_under(sandbox_dir)
        if failed:
            raise RuntimeFailure(f"could not unmount {', '.join(failed)}; is a process still using it?")
        # the loop backend's image file (possibly outside sandbox_dir), then our state file
        state_file = sandbox_dir / "rootfs.json"
        try:
            image = json.loads(state_file.read_text()).get("image")
        except (OSError, ValueError):
            image = None
        images = [Path(image)] if image else []
        images.append(sandbox_dir / "scratch.img")
        for img in images:
            if img.exists() and loopdev.wait_detached(img):
                raise RuntimeFailure(f"loop device of {img} is still attached; is the disk still mounted?")
        for p in [*images, state_file]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def usage_bytes(self) -> int:
        """Bytes used on the scratch filesystem (the sandbox's writes), 0 for the copy fallback."""
        if self.scratch is None:
            return 0
        st = os.statvfs(self.scratch)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def _write_state(self) -> None:
        try:
            prev = json.loads((self.sandbox_dir / "rootfs.json").read_text())
        except (OSError, ValueError):
            prev = {}
        state = {
            "image": prev.get("image"),
            "mode": self.mode,
            "backend": self.backend,
            "size_mb": self.size_mb,
            "lowers": [str(p) for p in self.lowers],
        }
        (self.sandbox_dir / "rootfs.json").write_text(json.dumps(state))


OVERLAY_FEATURES = "redirect_dir=off,metacopy=off"
"""Pinned whatever the kernel's defaults: snapshots, merges and flattening read uppers as plain trees, so a
renamed directory must be copied up whole (no redirect xattr) and a chmod must copy up the data too (no
metadata-only copy)."""


def _mount_overlay(
    lowers: list[Path], upper: Path, work: Path, merged: Path, id_map: IdMap | None = None
) -> None:
    # overlayfs wants lowerdir topmost first; callers give lowest first.
    ordered = [str(p) for p in reversed(lowers)]
    if id_map is not None:
        _mount_overlay_idmapped(ordered, upper, work, merged, id_map)
        return
    data = f"lowerdir={':'.join(ordered)},upperdir={upper},workdir={work},{OVERLAY_FEATURES}"
    needs_fds = len(data) > _MOUNT_DATA_MAX or any(
        c in s for s in [*ordered, str(upper), str(work)] for c in _UNSAFE
    )
    if not needs_fds:
        mounts.mount("overlay", merged, "overlay", 0, data)
        return
    # Long or unusual paths: refer to each dir through an O_PATH fd (/proc/self/fd/N is short and
    # safe); thread-safe unlike chdir-relative paths. The kernel resolves them at mount time.
    fds: list[int] = []
    try:
        for p in [*ordered, str(upper), str(work)]:
            fds.append(os.open(p, os.O_PATH | os.O_DIRECTORY))
        names = [f"/proc/self/fd/{fd}" for fd in fds]
        data = f"lowerdir={':'.join(names[:-2])},upperdir={names[-2]},workdir={names[-1]},{OVERLAY_FEATURES}"
        if len(data) > 4000:
            raise InvalidInputError(
                f"too many layers ({len(lowers)}) for one overlay mount; flatten the image"
            )
        mounts.mount("overlay", merged, "overlay", 0, data)
    finally:
        for fd in fds:
            os.close(fd)


def _mount_overlay_idmapped(
    ordered: list[str], upper: Path, work: Path, merged: Path, id_map: IdMap
) -> None:
    """The overlay over idmapped views of every lower and of the scratch fs holding upper/work, mounted with
    the range's root as fsuid (overlayfs works on the upper with its mounter's credentials)."""
    if upper.parent != work.parent:
        raise InvalidInputError("an idmapped overlay needs upper and work in the same directory")
    fds: list[int] = []
    ns = id_map.open_userns()
    try:
        for p in [*ordered, str(upper.parent)]:
            fds.append(idmap.idmapped_clone(p, ns))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        os.close(ns)
    try:
        names = [f"/proc/self/fd/{fd}" for fd in fds]
        scratch = names[-1]
        data = (
            f"lowerdir={':'.join(names[:-1])},upperdir={scratch}/{upper.name},workdir={scratch}/{work.name},"
            f"{OVERLAY_FEATURES}"
        )
        if len(data) > 4000:
            raise InvalidInputError(
                f"too many layers ({len(ordered)}) for one overlay mount; flatten the image"
            )
        idmap.as_mounter(id_map.host_id, lambda: mounts.mount("overlay", merged, "overlay", 0, data))
    finally:
        for fd in fds:
            os.close(fd)


def _mount_loop(image: Path, target: Path, size_mb: int, template_dir: Path) -> None:
    try:
        loopdev.mount_scratch(image, target, size_mb, template_dir)
        shutil.rmtree(target / "lost+found", ignore_errors=True)
        return
    except OSError as exc:
        if mounts.is_mountpoint(target):
            raise
        log.debug("fast loop mount failed (%s); using mount -o loop", exc)
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
    _mount_loop_cli(image, target, size_mb)


def _mount_loop_cli(image: Path, target: Path, size_mb: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    mkfs = subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,nodiscard",
            str(image),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if mkfs.returncode != 0:
        raise RuntimeFailure(f"mkfs.ext4 for the sandbox disk failed: {mkfs.stderr.strip()}")
    mnt = subprocess.run(
        ["mount", "-o", "loop,nosuid,nodev", str(image), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mnt.returncode != 0:
        raise RuntimeFailure(f"loop mount of the sandbox disk failed: {mnt.stderr.strip()}")
    # ext4 root dir has lost+found; keep the fs root clean for upper/work
    shutil.rmtree(target / "lost+found", ignore_errors=True)


def scratch_image(image_dir: Path, sandbox_id: str) -> Path:
    """Where the loop backend keeps the disk of ``sandbox_id`` (:meth:`OverlayRootfs.mount` with
    ``image_dir``): it outlives ``run_dir`` (a tmpfs), e.g. across a host reboot."""
    return Path(image_dir) / f"{sandbox_id}.scratch.img"


def mount_scratch_readonly(image: Path, target: Path) -> Path | None:
    """Mount a loop-backed scratch disk that no sandbox uses any more read-only at ``target`` (to recover
    the writable layer of a sandbox whose run_dir state is gone). Returns its ``upper`` dir, or None if the
    disk holds none. Unmount with :func:`faasd.rootfs.mounts.unmount_all_under`."""
    target.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-o", "loop,ro,nosuid,nodev,noexec", str(image), str(target)],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0:
        raise RuntimeFailure(f"mounting the sandbox disk {image} read-only failed: {res.stderr.strip()}")
    upper = target / "upper"
    return upper if upper.is_dir() else None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _remove(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _flat_copy(lowers: list[Path], dest: Path) -> None:
    """Copy lowers (lowest first) into ``dest`` applying overlay whiteouts and opaque dirs."""
    for layer in lowers:
        whiteouts: list[Path] = []
        for root, dirs, files in os.walk(layer):
            rel = Path(root).relative_to(layer)
            if rel != Path(".") and _is_opaque(Path(root)):
                target = dest / rel
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
            for name in files + dirs:
                p = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    if _is_whiteout(p.lstat()):
                        whiteouts.append(rel / name)
                        _remove(dest / rel / name)
        cp = subprocess.run(
            ["cp", "-a", "--reflink=auto", f"{layer}/.", f"{dest}/"],
            capture_output=True,
            text=True,
            check=False,
        )
        if cp.returncode != 0:
            if "No space left" in cp.stderr:
                raise StorageFullError(f"no space to copy the image layers into {dest}: free disk space")
            raise RuntimeFailure(f"copying layer {layer} failed: {cp.stderr.strip()}")
        for rel in whiteouts:
            _remove(dest / rel)
    # drop overlay metadata copied along
    for root, dirs, _files in os.walk(dest):
        for name in [".", *dirs]:
            with contextlib.suppress(OSError):
                os.removexattr(os.path.join(root, name), _OPAQUE_XATTR, follow_symlinks=False)


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
