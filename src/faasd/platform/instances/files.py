"""Using a running instance: exec a command, upload files (a tar archive or single files), download a path.

Every operation runs inside the instance's sandbox through :meth:`InstanceRegistry.use` (which resumes
an auto-paused instance first); tar extraction and archiving happen *inside* the sandbox too.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Sequence
from typing import Any

from faasd.errors import InvalidInputError, NotFoundError, pids_exhausted
from faasd.platform.instances.registry import InstanceRegistry
from faasd.platform.instances.specs import ExecCommand, UploadedFile
from faasd.platform.instances.tarfiles import abs_path, check_tar, files_to_tar

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
UPLOAD_SCRIPT = """set -e
mkdir -p -- "$1"
f=$(mktemp -p "$1" .faasd-upload.XXXXXX)
trap 'rm -f -- "$f"' EXIT
trap 'rm -f -- "$f"; exit 1' HUP INT TERM PIPE
cat > "$f"
n=$(wc -c < "$f")
if [ $n -ne "$2" ]; then echo "the upload was cut short: $n of $2 bytes arrived" >&2; exit 75; fi
tar -x -f "$f" -C "$1" --no-same-owner --no-overwrite-dir
"""
"""Upload: receive the whole archive (``$2`` bytes) into a hidden file in the target dir ``$1``, then
extract it (see :func:`upload_tar`)."""


async def exec_in(registry: InstanceRegistry, instance_id: str, cmd: ExecCommand) -> dict[str, Any]:
    if cmd.cwd is not None:
        abs_path(cmd.cwd, "cwd")
    inst = registry.get(instance_id)
    env = {**(inst.env or {}), **cmd.env}
    async with registry.use(instance_id) as sb:
        started = time.perf_counter()
        res = await sb.exec(
            cmd.args, stdin=cmd.stdin, timeout=cmd.timeout_s, env=env, cwd=cmd.cwd,
            output_limit=MAX_OUTPUT_BYTES, watch_pids=True,
        )
    if res.pids_exhausted:
        raise pids_exhausted(
            sb.spec.limits.pids,
            "the exec's process group (the instance keeps running)",
            instance=instance_id,
            detected_ms=res.pids_detected_ms,
            stdout=res.stdout[-8192:].decode("utf-8", "replace"),
            stderr=res.stderr[-8192:].decode("utf-8", "replace"),
        )
    return {
        "exit_code": res.exit_code,
        "stdout": res.stdout.decode("utf-8", "replace"),
        "stderr": res.stderr.decode("utf-8", "replace"),
        "stdout_truncated": res.stdout_truncated,
        "stderr_truncated": res.stderr_truncated,
        "timed_out": res.timed_out,
        "oom_killed": res.oom_killed,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }


async def upload_tar(
    registry: InstanceRegistry, instance_id: str, target_path: str, data: bytes
) -> dict[str, Any]:
    """Extract a (validated) tar archive under ``target_path`` *inside* the instance.

    All or nothing with respect to the daemon: the archive is first received whole into a hidden file
    in the target directory (removed afterwards), and extracted only if every byte arrived. A daemon
    that dies while it sends the archive leaves no partial file; one that dies after that leaves the
    extraction to finish by itself (the exec'd process does not depend on the daemon)."""
    target = abs_path(target_path, "target_path")
    count = check_tar(data)
    async with registry.use(instance_id) as sb:
        res = await sb.exec(
            ["/bin/sh", "-c", UPLOAD_SCRIPT, "sh", target, str(len(data))], stdin=data, timeout=300
        )
    if res.exit_code != 0:
        raise InvalidInputError(
            f"extracting the upload into {target} failed (exit {res.exit_code}): "
            f"{res.stderr.decode('utf-8', 'replace').strip()[-2000:]}",
            exit_code=res.exit_code,
        )
    return {"target_path": target, "files": count, "bytes": len(data)}


async def upload_files(
    registry: InstanceRegistry, instance_id: str, target_path: str, files: Sequence[UploadedFile]
) -> dict[str, Any]:
    return await upload_tar(registry, instance_id, target_path, files_to_tar(files))


async def download(registry: InstanceRegistry, instance_id: str, path: str) -> bytes:
    """A tar archive of ``path`` (file or directory) inside the instance; members are named by
    the path's last component."""
    p = abs_path(path, "path")
    parent, name = posixpath.split(p)
    if not name:
        parent, name = "/", "."
    async with registry.use(instance_id) as sb:
        res = await sb.exec(["tar", "-c", "-f", "-", "-C", parent or "/", "--", name], timeout=300)
    if res.exit_code != 0:
        msg = res.stderr.decode("utf-8", "replace").strip()[-2000:]
        if "No such file" in msg or "Cannot stat" in msg:
            raise NotFoundError(f"{p} does not exist in instance {instance_id}", path=p)
        raise InvalidInputError(f"archiving {p} failed (exit {res.exit_code}): {msg}")
    if len(res.stdout) > MAX_DOWNLOAD_BYTES:
        raise InvalidInputError(f"{p} is larger than {MAX_DOWNLOAD_BYTES} bytes as a tar; download less")
    return res.stdout
