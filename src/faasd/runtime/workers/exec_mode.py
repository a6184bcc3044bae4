"""``exec`` mode, the classic watchdog: every request runs the function's command with ``runc exec``.

The container's process is ``faasd-init`` (a static PID 1 that works in any image, even one without libc
or shell); each request runs ``command`` through ``faasd-init --exec``, which enforces the timeout inside
the sandbox: request body on stdin, response body from stdout, request metadata in CGI-style variables.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from faasd.errors import InvalidInputError, ResourceLimitError
from faasd.runtime.agent_client import (
    FunctionError,
    InvokeEvent,
    InvokeRequest,
    InvokeResult,
    StreamChunk,
    Timings,
    error_result,
)
from faasd.runtime.agent_files import INIT_IN_CONTAINER
from faasd.runtime.sandbox import Sandbox
from faasd.runtime.workers.spec import WorkerSpec

EXEC_TIMEOUT_EXIT = 124
EXEC_TIMEOUT_MARKER = b"\nfaasd-init: timeout\n"
EXEC_BACKSTOP_GRACE_S = 5.0


async def invoke_exec(
    sandbox: Sandbox,
    spec: WorkerSpec,
    request: InvokeRequest,
    *,
    init_ms: float | None,
    oom_kills: Callable[[], int],
) -> AsyncIterator[InvokeEvent]:
    """Run ``spec``'s command once for ``request`` (``runc exec`` of ``faasd-init --exec``); yields its
    stderr, then the result. Timeouts, OOM kills and oversized responses raise
    :class:`ResourceLimitError`; a command missing from the image :class:`InvalidInputError`."""
    command = spec._exec_command()
    env = {**cgi_env(request), **request.env}
    oom_before = oom_kills()
    # faasd-init enforces the timeout inside the sandbox (and kills the request's process group), so
    # `runc exec` always ends by itself; the host timeout is only a backstop.
    timeout_ms = int(request.timeout_s * 1000) if request.timeout_s else 0
    argv = [INIT_IN_CONTAINER, "--exec", str(timeout_ms), "--", *command]
    backstop = request.timeout_s + EXEC_BACKSTOP_GRACE_S if request.timeout_s else None
    started = time.perf_counter()
    res = await sandbox.exec(argv, stdin=request.body, timeout=backstop, env=env, cwd=spec.cwd)
    run_ms = round((time.perf_counter() - started) * 1000, 3)
    if res.timed_out:
        raise ResourceLimitError(
            f"the function did not finish within its timeout of {request.timeout_s} s and could not be "
            "stopped inside its sandbox; the worker is being recycled",
            limit="timeout",
            timeout_s=request.timeout_s,
            worker_usable=False,
        )
    if res.exit_code == EXEC_TIMEOUT_EXIT and res.stderr.endswith(EXEC_TIMEOUT_MARKER):
        raise ResourceLimitError(
            f"the function did not finish within its timeout of {request.timeout_s} s; "
            "its process was killed",
            limit="timeout",
            timeout_s=request.timeout_s,
            worker_usable=True,
            stderr=res.stderr[: -len(EXEC_TIMEOUT_MARKER)].decode("utf-8", "replace")[-4096:],
        )
    if res.exit_code == 137 and oom_kills() > oom_before:
        raise ResourceLimitError(
            f"function {spec.function!r} exceeded its memory limit of "
            f"{spec.limits.memory_mb} MiB "
            "and was killed",
            limit="memory",
            memory_mb=spec.limits.memory_mb,
            worker_usable=True,
        )
    if len(res.stdout) > spec.max_response_bytes:
        raise ResourceLimitError(
            f"the function's response of {len(res.stdout)} bytes exceeds the limit of "
            f"{spec.max_response_bytes} bytes",
            limit="response_bytes",
            worker_usable=True,
        )
    stderr = res.stderr[: spec.max_output_bytes]
    if stderr:
        yield StreamChunk("stderr", stderr)
    timings = Timings(init_ms=init_ms, run_ms=run_ms, total_ms=run_ms)
    common: dict[str, Any] = {
        "stderr": stderr,
        "exit_code": res.exit_code,
        "timings": timings,
        "output_truncated": len(res.stderr) > len(stderr),
    }
    if res.exit_code == 0:
        yield InvokeResult(
            status=200, headers=[("content-type", "application/octet-stream")], body=res.stdout, **common
        )
        return
    if looks_like_missing_command(res.exit_code, res.stderr):
        raise InvalidInputError(
            f"the command {command!r} of function {spec.function!r} cannot be run in its image: "
            f"{res.stderr.decode('utf-8', 'replace').strip()[-500:]}"
        )
    err = FunctionError(
        kind="exit_code",
        message=f"the function's command exited with code {res.exit_code}",
        traceback=stderr.decode("utf-8", "replace")[-4000:],
    )
    result = error_result(err, **common)
    if res.stdout:
        result.body = res.stdout
        result.headers = [("content-type", "application/octet-stream")]
    yield result


def cgi_env(request: InvokeRequest) -> dict[str, str]:
    """The classic watchdog's request variables: Http_Method, Http_Path, Http_Query, Http_<Header>."""
    env = {"Http_Method": request.method, "Http_Path": request.path or "/", "Http_Query": request.query}
    for k, v in request.headers.items():
        name = "Http_" + re.sub(r"[^A-Za-z0-9]", "_", k.title())
        env[name] = v
    return env


def looks_like_missing_command(exit_code: int, stderr: bytes) -> bool:
    text = stderr.decode("utf-8", "replace")
    return exit_code in (126, 127, 255) and (
        "faasd-init: cannot run" in text
        or "exec failed" in text
        or "executable file not found" in text
        or ("no such file or directory" in text and "runc" in text)
    )
