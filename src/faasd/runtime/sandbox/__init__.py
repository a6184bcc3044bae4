"""Sandboxes: one runc container on an overlay rootfs in its own netns and cgroup, with cleanup on every path.

::

    manager = SandboxManager(settings)
    sb = await manager.create(spec)          # overlay + netns + bundle + runc create (undone on failure)
    await sb.start()
    status = await sb.wait()                 # ExitStatus(exit_code, oom_killed, timed_out, signal)
    await sb.destroy()                       # idempotent

    result = await manager.run(spec, stdin=b"", timeout_s=5)   # all of the above in one call
    result = await manager.run(spec, background_teardown=True)  # answers before the teardown...
    await manager.settle()                                      # ...which this waits for

Bundle layout (``run_dir/sandboxes/<id>/``): ``config.json``, ``rootfs/`` (merged overlay), ``scratch/``
(size-bounded fs with ``upper/`` and ``work/``), ``io/`` (a 1 MiB tmpfs bind-mounted read-write at
``/run/faasd-io``), ``init.pid``, ``runc.log``. Every mount under the bundle is undone on teardown
(``OverlayRootfs.unmount_dir(bundle)``, also used by :meth:`SandboxManager.cleanup_orphans`).

The container's stdio are pipes owned by the :class:`Sandbox`; stdout/stderr are drained continuously
into bounded buffers (and passed to ``on_output`` if given) so a chatty process never blocks.

Modules of this package, lowest first: ``output`` (stdio buffers), ``limits`` (which limit was hit, pids
watch), ``registry`` (the live sandboxes of this process), ``exec`` (``runc exec``), ``sandbox`` (the
:class:`Sandbox`), ``userns_setup`` (idmapped root/binds, restore config for a user namespace), ``storage``
(full-disk errors), ``teardown``, ``create`` (the create/restore steps), ``manager``
(:class:`SandboxManager`).
"""

from faasd.runtime.models import (
    AGENT_DIR_IN_CONTAINER,
    IO_DIR_IN_CONTAINER,
    SECRETS_DIR_IN_CONTAINER,
    BindMount,
    ExecResult,
    ExitStatus,
    Limits,
    NetworkSpec,
    RunResult,
    SandboxInfo,
    SandboxSpec,
)
from faasd.runtime.sandbox.limits import PIDS_POLL_S, pids_limit_hit, raise_for_limits
from faasd.runtime.sandbox.manager import SandboxManager
from faasd.runtime.sandbox.output import OUTPUT_LIMIT_BYTES, OutputCallback
from faasd.runtime.sandbox.sandbox import Sandbox

__all__ = [
    "AGENT_DIR_IN_CONTAINER",
    "IO_DIR_IN_CONTAINER",
    "OUTPUT_LIMIT_BYTES",
    "PIDS_POLL_S",
    "SECRETS_DIR_IN_CONTAINER",
    "BindMount",
    "ExecResult",
    "ExitStatus",
    "Limits",
    "NetworkSpec",
    "OutputCallback",
    "RunResult",
    "Sandbox",
    "SandboxInfo",
    "SandboxManager",
    "SandboxSpec",
    "pids_limit_hit",
    "raise_for_limits",
]
