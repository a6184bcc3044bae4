"""Persistent instances: long-running sandboxes you exec into, copy files to and from, expose ports of.

An instance runs ``faasd-init`` (a reaping PID 1) in a sandbox on an image, or is restored from a
snapshot. Its filesystem survives :meth:`InstanceService.stop`: the overlay upper is stored as a
filesystem-only snapshot (parent: the snapshot the instance was layered on), and the next start
layers a fresh upper over that chain. ``pause``/``resume`` use the cgroup freezer. An instance with a
``ttl_s`` is paused automatically after that long without use and resumed on the next use (exec,
files, proxied connection). Exposed ports are host listeners on ``127.0.0.1`` that connect into the
sandbox's network namespace per connection (so a use resumes an auto-paused instance first).

Every stop adds one snapshot (one overlay lower) to the chain; once the chain is longer than
:data:`~faasd.snapshots.service.MAX_CHAIN_LENGTH` the stop flattens it (same files, one lower): the
stop snapshots above the snapshot the instance was started from are merged into one child of it (so
it stays a common base of the instance's snapshots), or, if that snapshot's own chain is longer than
half the bound, the whole chain is merged into one parentless snapshot. An instance's sandbox thus
has a bounded number of lowers however often it is stopped. Stop snapshots of the instance that
nothing references any more (no instance record, no function's ``branch_from``, no child snapshot --
e.g. a user's snapshot of the instance keeps its ancestors) are then deleted; ``gc`` frees their
blobs.

Instances outlive the daemon: a daemon crash or restart leaves their sandboxes running and the next
daemon re-adopts them (processes, files, pause state, ports, TTL); one whose sandbox exited meanwhile
keeps its writable layer as its next base (:mod:`.adoption`).

Modules: :mod:`.service` (:class:`InstanceService`, the lifecycle), :mod:`.registry` (records, locks,
live sandboxes, ``use``), :mod:`.files` (exec, upload, download), :mod:`.tarfiles` (archive checks),
:mod:`.ports` (port listeners), :mod:`.chain` (chain bounding, stop-snapshot GC), :mod:`.ttl` (idle
pauses), :mod:`.specs` (the typed inputs: :class:`InstanceSpec`, :class:`ExecCommand`, :class:`PortSpec`,
:class:`UploadedFile`), :mod:`.adoption` (re-adoption after a daemon restart). The HTTP request models
are :mod:`faasd.api.instance_models`.
"""

from faasd.platform.instances.chain import LABEL, STOP_KIND
from faasd.platform.instances.files import MAX_DOWNLOAD_BYTES, MAX_OUTPUT_BYTES
from faasd.platform.instances.registry import InstanceRegistry, LiveInstance, instance_dict
from faasd.platform.instances.service import INIT_ARGS, InstanceService
from faasd.platform.instances.specs import (
    DEFAULT_IMAGE,
    ExecCommand,
    InstanceSpec,
    PortSpec,
    UploadedFile,
)
from faasd.platform.instances.tarfiles import check_tar, files_to_tar, tar_members

__all__ = [
    "DEFAULT_IMAGE",
    "INIT_ARGS",
    "LABEL",
    "MAX_DOWNLOAD_BYTES",
    "MAX_OUTPUT_BYTES",
    "STOP_KIND",
    "ExecCommand",
    "InstanceRegistry",
    "InstanceService",
    "InstanceSpec",
    "LiveInstance",
    "PortSpec",
    "UploadedFile",
    "check_tar",
    "files_to_tar",
    "instance_dict",
    "tar_members",
]
