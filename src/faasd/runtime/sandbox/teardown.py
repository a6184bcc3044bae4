"""Removing every trace of a sandbox on the host: container, cgroups, netns and egress link, staged user
namespace mounts, overlay and bundle. Used by ``Sandbox.destroy`` and ``SandboxManager.cleanup_orphans``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

from faasd.errors import RuntimeFailure
from faasd.rootfs import OverlayRootfs
from faasd.rootfs import mounts as _mounts
from faasd.runtime import cgroups, network, userns
from faasd.runtime.runc import ContainerNotFound, OciRuntime


async def teardown(
    sandbox_id: str, bundle: Path, runtime: OciRuntime, rootfs: OverlayRootfs | None, *,
    restore_images: Sequence[Path],
) -> None:
    """Remove every trace of ``sandbox_id``; collects errors and raises one RuntimeFailure at the end."""
    problems: list[str] = []
    loop = asyncio.get_running_loop()
    state_dir = runtime.root / sandbox_id
    if (state_dir / "criu-root").exists():  # a restore interrupted mid-way can leave CRIU's root mounted
        await loop.run_in_executor(None, _mounts.unmount_all_under, state_dir)
    try:
        await runtime.delete(sandbox_id, force=True)
    except ContainerNotFound:
        pass
    except RuntimeFailure as exc:
        # force-delete can fail for a half-created container: kill its processes via the cgroup
        await asyncio.get_running_loop().run_in_executor(None, cgroups.remove, sandbox_id)
        try:
            await runtime.delete(sandbox_id, force=True)
        except ContainerNotFound:
            pass
        except RuntimeFailure:
            problems.append(str(exc))
            # runc's state dir would keep a dead container listed: remove it
            shutil.rmtree(runtime.root / sandbox_id, ignore_errors=True)
    left = await loop.run_in_executor(None, cgroups.remove, sandbox_id)
    if left:
        problems.append(f"cgroup dirs {', '.join(map(str, left))} could not be removed")
    try:
        await loop.run_in_executor(None, network.teardown_egress, sandbox_id)
        network.delete_netns(sandbox_id)
    except Exception as exc:
        problems.append(str(exc))
    for left_images in restore_images:  # left by a crash mid-restore
        shutil.rmtree(left_images, ignore_errors=True)
    staged = await loop.run_in_executor(None, userns.remove, sandbox_id)
    if staged:
        problems.append(f"could not unmount {', '.join(staged)}")
    try:
        if rootfs is not None:
            rootfs.unmount()
        else:
            OverlayRootfs.unmount_dir(bundle)
    except Exception as exc:
        problems.append(str(exc))
    if _mounts.mounts_under(bundle):
        problems.append(f"mounts left under {bundle}")
    elif not problems:
        shutil.rmtree(bundle, ignore_errors=True)
    # else the bundle dir stays: it is what lets cleanup_orphans find this sandbox and finish the job
    # (release its user namespace range included) once whatever failed works again
    if not problems:  # a range is reused only once nothing of the sandbox is left
        userns.release(sandbox_id)
    if problems:
        raise RuntimeFailure(f"cleanup of sandbox {sandbox_id} incomplete: {'; '.join(problems)}")
