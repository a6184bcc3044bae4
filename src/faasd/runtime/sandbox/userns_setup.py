"""A sandbox in a user namespace: its root and bind sources idmapped for its id range, staged where runc
can resolve them (``/run/faasd-userns/roots/<id>/``), and a dumped config.json made fit for a restore into a
new range (see docs/ARCHITECTURE.md, "user namespaces")."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.errors import InvalidInputError
from faasd.rootfs import idmap
from faasd.rootfs import mounts as _mounts
from faasd.runtime import userns
from faasd.runtime.models import UserNamespace
from faasd.runtime.sandbox.sandbox import Sandbox

log = logging.getLogger(__name__)


BINDS_ANNOTATION = "faasd.userns.binds"
"""config.json annotation of a sandbox with a user namespace: ``{destination: original source}`` of its
idmapped binds (sources inside the bundle as ``@bundle/<path>``), so a restore can idmap them again."""


def idmap_binds(sb: Sandbox, binds: Sequence[tuple[str, Path]]) -> dict[str, Path]:
    """For a sandbox with a user namespace: an idmapped view of every bind source under ``<bundle>/binds/``
    (files owned by host root show as the sandbox's root, as without a user namespace). A source on a
    filesystem without idmap support is bound as it is (its files then show as ``nobody`` inside)."""
    ns = sb.userns
    if ns is None:
        return {}
    out: dict[str, Path] = {}
    base = userns.stage_dir(sb.id) / "binds"
    base.mkdir(mode=0o711, exist_ok=True)
    for i, (dest, source) in enumerate(binds):
        target = base / str(i)
        if Path(source).is_dir():
            target.mkdir()
        else:
            target.touch()
        try:
            idmap.bind_idmapped(source, target, idmap.IdMap(ns.host_id, ns.size, userns.userns_path(sb.id)))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            log.warning("bind source %s cannot be idmapped (%s); its files show as nobody in %s",
                        source, exc, sb.id)
            continue
        out[dest] = target
    return out


def stage_root(sb: Sandbox) -> Path:
    """The merged rootfs bound at a path runc can resolve from inside the user namespace."""
    assert sb.rootfs is not None
    target = userns.stage_dir(sb.id) / "rootfs"
    target.mkdir(mode=0o755)
    _mounts.mount(str(sb.rootfs.path), target, None, _mounts.MS_BIND)
    return target


def bind_origins(sb: Sandbox, binds: Sequence[tuple[str, Path]]) -> dict[str, str]:
    out = {}
    for dest, source in binds:
        src = str(source)
        if src == str(sb.bundle) or src.startswith(f"{sb.bundle}/"):
            src = "@bundle" + src[len(str(sb.bundle)) :]
        out[dest] = src
    return out


def restore_config(sb: Sandbox, config: Mapping[str, Any]) -> dict[str, Any]:
    """The restore config with this sandbox's user namespace (the dumped one has the range of the sandbox
    the snapshot was taken from, or none: then this sandbox must have none either).

    For a sandbox with one: the mappings become its own range, the netns loses its path (CRIU restores the
    dumped netns inside the user namespace it re-creates; the manager pins it afterwards), and the root and
    the bind sources are idmapped again for the new range (their original sources are in the
    ``faasd.userns.binds`` annotation).
    """
    cfg = json.loads(json.dumps(config))
    dumped = UserNamespace.from_config(cfg)
    if (dumped is None) != (sb.userns is None):
        had = "with" if dumped is not None else "without"
        raise InvalidInputError(
            f"the snapshot was taken {had} a user namespace; restore it with SandboxSpec.userns="
            f"{dumped is not None}"
        )
    if sb.userns is None:
        return cfg
    linux = cfg["linux"]
    linux.update(sb.userns.oci_mappings())
    linux["namespaces"] = [
        {"type": n["type"]} if n.get("type") in ("network", "user") else n
        for n in linux.get("namespaces", [])
    ]
    # CRIU makes that netns empty (runc dumps it as "empty"): bring lo up before it restores sockets (a
    # loopback TCP connection reconnects at once); runc runs prestart hooks at CRIU's setup-namespaces
    hooks = cfg.setdefault("hooks", {})
    hooks["prestart"] = [*(h for h in hooks.get("prestart", []) if h != LO_UP_HOOK), LO_UP_HOOK]
    cfg["root"]["path"] = str(stage_root(sb))
    origins = json.loads(cfg.get("annotations", {}).get(BINDS_ANNOTATION, "{}"))
    binds = [
        (dest, sb.bundle / src[len("@bundle/"):] if src.startswith("@bundle/") else Path(src))
        for dest, src in origins.items()
    ]
    sources = idmap_binds(sb, binds)
    for m in cfg.get("mounts", []):
        if m.get("destination") in sources:
            m["source"] = str(sources[m["destination"]])
    make_mountpoints(sb, cfg)
    return cfg


LO_UP_HOOK = {
    "path": "/bin/sh",
    "args": [
        "sh", "-c",
        "pid=$(grep -o '\"pid\":[0-9]*' | cut -d: -f2) && exec nsenter -t \"$pid\" -n ip link set lo up",
    ],
    "timeout": 10,
}
"""OCI prestart hook (reads the state JSON with the pid on stdin): ``lo`` up in the restored netns."""


def make_mountpoints(sb: Sandbox, cfg: Mapping[str, Any]) -> None:
    """Create the bind mount points in the root before ``runc restore`` does: runc makes them as host root,
    which the idmapped upper refuses (EOVERFLOW: host id 0 is outside the sandbox's range); made with the
    range's root as fsuid they are owned by root inside, as if the sandbox had made them."""
    assert sb.rootfs is not None and sb.userns is not None
    root = sb.rootfs.path

    def make() -> None:
        for m in cfg.get("mounts", []):
            dest = str(m.get("destination", "")).lstrip("/")
            if m.get("type") != "bind" or not dest or ".." in Path(dest).parts:
                continue
            target = root / dest
            if target.exists() or target.is_symlink():
                continue
            if Path(str(m.get("source", ""))).is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()

    idmap.as_mounter(sb.userns.host_id, make)


RESTORES_SUBDIR = "restores"
"""The per-restore image dirs' dir inside the snapshot image cache (its sweep removes leftovers there)."""


def restore_images_dirs(settings: Settings, sandbox_id: str) -> tuple[Path, Path]:
    """Where a restore of ``sandbox_id`` with a user namespace may make its per-restore CRIU image dir
    (removed after the restore): under data_dir, and in the snapshot image cache (a tmpfs)."""
    name = f"{sandbox_id}.criu-images"
    return settings.data_dir / "scratch" / name, settings.image_cache_dir / RESTORES_SUBDIR / name


def restore_images_dir(settings: Settings, sandbox_id: str, image_path: Path) -> Path:
    """The per-restore image dir for images at ``image_path``: on their filesystem (hard links, not
    copies), i.e. in the image cache for images unpacked there, else under data_dir."""
    disk, memory = restore_images_dirs(settings, sandbox_id)
    return memory if Path(image_path).is_relative_to(settings.image_cache_dir) else disk
