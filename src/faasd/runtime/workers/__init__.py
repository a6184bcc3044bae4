"""Workers: one function instance = one sandbox + the way requests reach the function inside it.

Modes:

* ``python`` / ``node`` (:mod:`.agent_mode`): the container's process is the faasd agent
  (``faasd/agents``, bind-mounted read-only at ``/faasd/agent``); requests go over the agent protocol
  on ``<bundle>/io/agent.sock``. Python can run each request in-process (fastest) or in a child forked
  from the preloaded process (``fork_per_request``: no state leaks between requests). The Node agent
  runs under ``faasd-init`` (Node does not reap orphaned processes; the Python agent does it itself as
  PID 1).
* ``exec`` (:mod:`.exec_mode`): classic watchdog. The container's process is ``faasd-init`` (a static
  PID 1 that works in any image, even one without libc or shell); every request runs ``command`` with
  ``runc exec`` (through ``faasd-init --exec``, which enforces the timeout inside the sandbox), request
  body on stdin, response body from stdout.
* ``http`` (:mod:`.http_mode`): the image's own HTTP server is the container's process, listening on
  ``port`` inside the sandbox's network namespace; requests are forwarded as HTTP/1.1 through a
  connection opened from inside that namespace (no bridge, no published port); the response body
  streams as ``StreamChunk("body", ...)``.

::

    worker = await start_worker(manager, WorkerSpec(function="hello", lowers=[...], handler="handler:handle"))
    result = await worker.invoke(InvokeRequest(body=b"hi"))
    async for event in worker.invoke_stream(InvokeRequest(body=b"hi")):   # StreamChunk..., InvokeResult
        ...
    await worker.close()

:mod:`.spec` holds :class:`WorkerSpec`, :mod:`.worker` the :class:`Worker` and :func:`start_worker`.
"""

from faasd.runtime.agent_client import (
    FunctionError,
    InvokeEvent,
    InvokeRequest,
    InvokeResult,
    StreamChunk,
    Timings,
)
from faasd.runtime.workers.http_mode import open_sandbox_connection
from faasd.runtime.workers.spec import MODES, WorkerMode, WorkerSpec
from faasd.runtime.workers.worker import PreparedWorker, Worker, prepare_worker, start_worker

__all__ = [
    "MODES",
    "FunctionError",
    "InvokeEvent",
    "InvokeRequest",
    "InvokeResult",
    "PreparedWorker",
    "StreamChunk",
    "Timings",
    "Worker",
    "WorkerMode",
    "WorkerSpec",
    "open_sandbox_connection",
    "prepare_worker",
    "start_worker",
]
