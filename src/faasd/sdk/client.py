"""``Client`` (blocking): a thin sender of the operations defined in ``_api``; ``AsyncClient``, its awaitable
twin, is in :mod:`faasd.sdk.async_client` (and importable from here: loaded on first use, since it brings
asyncio, ~15 ms a blocking caller such as ``faas`` need not pay).

Both take the same arguments; the base URL and key default to ``FAAS_URL``/``FAAS_API_KEY`` (or the
admin key file). The SDK never retries on its own: a 429 raises ``RateLimited``/``CapacityExhausted``
carrying ``retry_after``, so the caller decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

import httpx

from faasd.sdk import _api
from faasd.sdk import models as sm
from faasd.sdk._api import Body, Call, DeployOptions, ExecuteOptions, StreamCall
from faasd.sdk._base import DEFAULT_LIMITS, DEFAULT_TIMEOUT, ClientBase, T
from faasd.sdk.errors import Conflict, ExecutionWaitTimeout, error_from_response, request_error
from faasd.sdk.instance_ops import InstanceOps
from faasd.sdk.models import (
    ApiKey,
    CreatedApiKey,
    ExecuteResult,
    Execution,
    ExecutionLogs,
    Function,
    FunctionSpec,
    Health,
    Info,
    InvokeResult,
    LogLine,
    ScaleResult,
    Secret,
    StreamEvent,
)

if TYPE_CHECKING:
    from faasd.sdk.async_client import AsyncClient, AsyncExecutionHandle

_ASYNC_NAMES = ("AsyncClient", "AsyncExecutionHandle")


def __getattr__(name: str) -> Any:
    """``AsyncClient`` and ``AsyncExecutionHandle`` (:mod:`faasd.sdk.async_client`), loaded on first use."""
    if name in _ASYNC_NAMES:
        from faasd.sdk import async_client

        return getattr(async_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "AsyncExecutionHandle",
    "Client",
    "ExecutionHandle",
]


class ExecutionHandle:
    """An accepted async invocation: poll with ``get()``, block with ``wait()``."""

    def __init__(self, client: Client, execution_id: str, status_url: str | None = None) -> None:
        self.client, self.id, self.status_url = client, execution_id, status_url

    def get(self) -> Execution:
        return self.client.get_execution(self.id)

    def logs(self) -> ExecutionLogs:
        return self.client.execution_logs(self.id)

    def wait(self, timeout: float | None = 300.0) -> Execution:
        """Poll until the execution finished (succeeded, failed or timeout) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay: float | None = None
        while True:
            execution = self.get()
            if execution.done:
                return execution
            delay = _api.next_poll_delay(delay)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise ExecutionWaitTimeout(self.id, timeout or 0.0, execution.status)
            time.sleep(delay)

    def __repr__(self) -> str:
        return f"ExecutionHandle({self.id!r})"


class Client(ClientBase, InstanceOps):
    """Blocking client of the faasd API.

    >>> with Client() as faas:
    ...     faas.deploy("hello", image="faasd/python:latest", handler="handler.handle")
    ...     print(faas.invoke("hello", {"name": "x"}).text)
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        key_file: Path | None = None,
        namespace: str | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, headers, key_file, namespace)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            transport=transport,
            limits=DEFAULT_LIMITS,
            verify=self.verify,
        )

    # -- plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: Call[T]) -> T:
        try:
            response = self._http.send(self._request(self._http, call))
        except httpx.RequestError as exc:
            raise request_error(self.base_url, exc) from exc
        call.check(response)
        return call.parse(response)

    def _stream(self, call: StreamCall[T]) -> Iterator[T]:
        try:
            response = self._http.send(self._request(self._http, call), stream=True)
        except httpx.RequestError as exc:
            raise request_error(self.base_url, exc) from exc
        try:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            decoder = call.decoder()
            try:
                for line in response.iter_lines():
                    yield from decoder.feed(line)
                    if decoder.done:
                        return
            except httpx.RequestError as exc:
                raise request_error(self.base_url, exc) from exc
            yield from decoder.end()
        finally:
            response.close()

    # -- functions
    def deploy(
        self,
        name: str,
        image: str | None = None,
        *,
        source: Path | None = None,
        spec: FunctionSpec | None = None,
        replace: bool = False,
        **options: Unpack[DeployOptions],
    ) -> Function:
        """Create a function; with ``replace=True`` update it instead when the name is taken.

        ``source``: a directory uploaded as a layer on top of ``image`` (default: the runtime's base
        image) and mounted at ``/function``.
        """
        full, tar = _api.deploy_request(name, image, source, options, spec)
        try:
            return self._call(_api.create_function(full, tar))
        except Conflict:
            if not replace:
                raise
            return self._call(_api.update_function(full, tar))

    def update(self, name: str, *, image: str | None = None, **options: Unpack[DeployOptions]) -> Function:
        """Change some fields of a deployed function (read-modify-write of its full spec)."""
        current = self.get_function(name).spec()
        return self._call(_api.update_function(_api.function_spec(name, image, options, current)))

    def get_function(self, name: str) -> Function:
        return self._call(_api.get_function(name))

    def list_functions(self) -> list[Function]:
        return self._call(_api.list_functions())

    def delete_function(self, name: str) -> None:
        self._call(_api.delete_function(name))

    def scale(
        self, name: str, replicas: int | None = None, *, min: int | None = None, max: int | None = None
    ) -> ScaleResult:
        return self._call(_api.scale_function(name, replicas, min, max))

    def function_logs(self, name: str, *, tail: int | None = None, since: str | None = None) -> list[LogLine]:
        return self._call(_api.function_logs(name, tail, since))

    def logs(
        self, name: str, *, follow: bool = True, tail: int | None = None, since: str | None = None
    ) -> Iterator[LogLine]:
        """Log lines of a function from the NDJSON stream; with ``follow`` it waits for new lines."""
        return self._stream(_api.follow_logs(name, tail, since, follow))

    # -- invoke
    def invoke(
        self,
        name: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult:
        """Run the function and return its response. A failing function is a result, not an exception
        (see ``InvokeResult.raise_for_status``); platform failures raise :class:`FaasdAPIError`."""
        return self._call(
            _api.invoke(name, data, content_type=content_type, headers=headers, query=query, timeout=timeout)
        )

    def invoke_async(
        self,
        name: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        callback_url: str | None = None,
    ) -> ExecutionHandle:
        accepted = self._call(
            _api.invoke_async(
                name, data, content_type=content_type, headers=headers, query=query, callback_url=callback_url
            )
        )
        return ExecutionHandle(self, accepted.execution_id, accepted.status_url)

    def invoke_stream(
        self,
        name: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Iterator[StreamEvent]:
        """Yield ``StreamStart``, then ``StreamOutput`` chunks, then one ``StreamResult``."""
        return self._stream(
            _api.invoke_stream(name, data, content_type=content_type, headers=headers, query=query)
        )

    # -- executions
    def get_execution(self, execution_id: str) -> Execution:
        return self._call(_api.get_execution(execution_id))

    def list_executions(
        self, *, function: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Execution]:
        return self._call(_api.list_executions(function, status, limit))

    def execution_logs(self, execution_id: str) -> ExecutionLogs:
        return self._call(_api.execution_logs(execution_id))

    def execution(self, execution_id: str) -> ExecutionHandle:
        """A handle on an existing execution id (e.g. from ``X-Execution-Id``)."""
        return ExecutionHandle(self, execution_id)

    # -- one-off execute
    def execute(
        self,
        command: list[str] | str | None = None,
        *,
        code: str | None = None,
        language: str | None = None,
        **options: Unpack[ExecuteOptions],
    ) -> ExecuteResult:
        return self._call(_api.execute(command, code, language, options))

    # -- the seed SDK's conveniences
    def run_python(self, code: str, **options: Unpack[ExecuteOptions]) -> ExecuteResult:
        """Run Python code (``python3 -c``) once, on ``faasd/python:latest`` unless ``image`` is given."""
        return self.execute(code=code, language="python", **options)

    def run_javascript(self, code: str, **options: Unpack[ExecuteOptions]) -> ExecuteResult:
        """Run JavaScript (``node -e``) once, on ``faasd/node:latest`` unless ``image`` is given."""
        return self.execute(code=code, language="node", **options)

    def run_bash(self, script: str, **options: Unpack[ExecuteOptions]) -> ExecuteResult:
        """Run a shell script (``/bin/sh -c``) once."""
        return self.execute(code=script, language="shell", **options)

    def fork_execution(
        self, parent_id: str, command: list[str] | str, **options: Unpack[ExecuteOptions]
    ) -> ExecuteResult:
        """Run ``command`` in a copy of a checkpointed/persistent execution's state (or a snapshot's)."""
        return self._call(_api.fork_execution(parent_id, command, options))

    def fork(
        self, source: str, commands: list[list[str] | str], **options: Unpack[ExecuteOptions]
    ) -> list[ExecuteResult]:
        """Each command in its own copy of ``source`` (the ``branch_from``); results in order."""
        return self._call(_api.fork(source, commands, options))

    def prewarm(self, image: str, count: int = 1, *, runtime: str | None = None) -> dict[str, Any]:
        """Start ``count`` warm execute sandboxes of ``image``; returns the pool's state."""
        return self._call(_api.prewarm(image, count, runtime))

    def pools(self) -> dict[str, Any]:
        return self._call(_api.pools())

    def get_metrics(self, *, detailed: bool = False) -> dict[str, Any]:
        """Measured execution counts, cache hit rate, latency percentiles (``/api/v1/metrics``)."""
        return self._call(_api.get_metrics(detailed))

    def health_check(self) -> dict[str, Any]:
        """``GET /health``: status, uptime and component checks."""
        return self._call(_api.health_check())

    # -- secrets
    def list_secrets(self) -> list[Secret]:
        return self._call(_api.list_secrets())

    def create_secret(self, name: str, value: str) -> Secret:
        return self._call(_api.create_secret(name, value))

    def update_secret(self, name: str, value: str) -> Secret:
        return self._call(_api.update_secret(name, value))

    def delete_secret(self, name: str) -> None:
        self._call(_api.delete_secret(name))

    # -- API keys
    def list_api_keys(self) -> list[ApiKey]:
        return self._call(_api.list_api_keys())

    def create_api_key(
        self,
        name: str,
        scopes: list[str] | None = None,
        *,
        rate_limit_rps: float | None = None,
        burst: int | None = None,
        namespace: str | None = None,
    ) -> CreatedApiKey:
        """A new key; ``namespace``: it acts in that namespace only (None: every namespace)."""
        call = _api.create_api_key(name, scopes or ["invoke"], rate_limit_rps, burst, namespace)
        return self._call(call)

    # -- namespaces (tenants; changes need an admin key)
    def list_namespaces(self) -> list[sm.Namespace]:
        return self._call(_api.list_namespaces())

    def get_namespace(self, name: str) -> sm.Namespace:
        """A namespace with its quotas and current use."""
        return self._call(_api.get_namespace(name))

    def create_namespace(
        self,
        name: str,
        *,
        max_sandboxes: int | None = None,
        max_memory_mb: int | None = None,
        max_disk_mb: int | None = None,
        max_snapshots: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> sm.Namespace:
        """A new namespace; a quota left None is unlimited."""
        quotas = _api.quotas(max_sandboxes, max_memory_mb, max_disk_mb, max_snapshots)
        return self._call(_api.create_namespace(name, quotas, labels))

    def set_namespace_quotas(self, name: str, **quotas: int | None) -> sm.Namespace:
        """Change the given quotas (None: unlimited); the others stay."""
        return self._call(_api.set_namespace_quotas(name, quotas))

    def delete_namespace(self, name: str) -> None:
        """Delete an empty namespace (:class:`Conflict` naming what it still holds otherwise)."""
        self._call(_api.delete_namespace(name))

    def delete_api_key(self, key_id: str) -> None:
        self._call(_api.delete_api_key(key_id))

    # -- system
    def health(self) -> Health:
        return self._call(_api.health())

    def info(self) -> Info:
        return self._call(_api.info())

    def metrics(self) -> str:
        return self._call(_api.metrics())

    # -- snapshots, restored sandboxes, branches, merges
    def snapshot(
        self,
        *,
        sandbox_id: str | None = None,
        function: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        instance_id: str | None = None,
    ) -> sm.Snapshot:
        """Checkpoint a running sandbox, an instance, or an idle worker of ``function``; it keeps
        running, and the snapshot becomes its new base (its next snapshot is a child of this one)."""
        return self._call(_api.create_snapshot(sandbox_id, function, labels, timeout_s, instance_id))

    def list_snapshots(self, *, function: str | None = None) -> list[sm.Snapshot]:
        return self._call(_api.list_snapshots(function))

    def get_snapshot(self, snapshot_id: str) -> sm.Snapshot:
        return self._call(_api.get_snapshot(snapshot_id))

    def delete_snapshot(self, snapshot_id: str, *, force: bool = False) -> None:
        self._call(_api.delete_snapshot(snapshot_id, force))

    def gc_snapshots(self) -> sm.SnapshotGcReport:
        return self._call(_api.gc_snapshots())

    def restore(self, snapshot_id: str, *, seed: int | None = None) -> sm.RestoredSandbox:
        """Start a new sandbox from a snapshot; invoke it with :meth:`invoke_sandbox`. With ``seed``
        it is copy 0 of :meth:`branch` with that seed."""
        return self._call(_api.restore_snapshot(snapshot_id, seed))

    def branch(
        self, snapshot_id: str, count: int = 2, *, seed: int | None = None
    ) -> list[sm.RestoredSandbox]:
        """``count`` copies of a snapshot, in copy order. With ``seed`` copy ``k``'s random generators
        are seeded from (seed, k): the same call repeats the same random sequences per copy."""
        return self._call(_api.branch_snapshot(snapshot_id, count, seed))

    def merge(
        self,
        snapshot_ids: list[str] | None = None,
        *,
        sandbox_ids: list[str] | None = None,
        instance_ids: list[str] | None = None,
        branches: list[str] | None = None,
        strategy: str = "fail",
        labels: Mapping[str, str] | None = None,
    ) -> sm.MergeResult:
        """Merge branches' file changes (snapshots, restored sandboxes/workers or instances; live ones
        are snapshotted first) against their common base; ``strategy="fail"`` raises ``Conflict``
        (``details["report"]``). ``branches``: any of these kinds, in order (``ours`` = the first)."""
        return self._call(
            _api.merge(
                snapshot_ids or [], sandbox_ids or [], strategy, labels, instance_ids or [], branches or []
            )
        )

    def list_sandboxes(self) -> list[sm.RestoredSandbox]:
        return self._call(_api.list_sandboxes())

    def get_sandbox(self, sandbox_id: str) -> sm.RestoredSandbox:
        return self._call(_api.get_sandbox(sandbox_id))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._call(_api.delete_sandbox(sandbox_id))

    def invoke_sandbox(
        self,
        sandbox_id: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult:
        return self._call(
            _api.invoke_sandbox(sandbox_id, data, content_type=content_type, headers=headers, timeout=timeout)
        )
