"""``AsyncClient``: the awaitable twin of :class:`~faasd.sdk.client.Client`, same methods and arguments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, Unpack

import httpx

from faasd.sdk import _api
from faasd.sdk import models as sm
from faasd.sdk._api import Body, Call, DeployOptions, ExecuteOptions, StreamCall
from faasd.sdk._base import DEFAULT_LIMITS, ClientBase, T
from faasd.sdk.errors import Conflict, ExecutionWaitTimeout, error_from_response, request_error
from faasd.sdk.instance_ops import AsyncInstanceOps
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


class AsyncExecutionHandle:
    """The ``AsyncClient`` twin of :class:`ExecutionHandle`."""

    def __init__(self, client: AsyncClient, execution_id: str, status_url: str | None = None) -> None:
        self.client, self.id, self.status_url = client, execution_id, status_url

    async def get(self) -> Execution:
        return await self.client.get_execution(self.id)

    async def logs(self) -> ExecutionLogs:
        return await self.client.execution_logs(self.id)

    async def wait(self, timeout: float | None = 300.0) -> Execution:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay: float | None = None
        while True:
            execution = await self.get()
            if execution.done:
                return execution
            delay = _api.next_poll_delay(delay)
            if deadline is not None and loop.time() + delay > deadline:
                raise ExecutionWaitTimeout(self.id, timeout or 0.0, execution.status)
            await asyncio.sleep(delay)

    def __repr__(self) -> str:
        return f"AsyncExecutionHandle({self.id!r})"


class AsyncClient(ClientBase, AsyncInstanceOps):
    """Asynchronous client of the faasd API; same methods as :class:`Client`, awaitable."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        key_file: Path | None = None,
        namespace: str | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, headers, key_file, namespace)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            transport=transport,
            limits=DEFAULT_LIMITS,
            verify=self.verify,
        )

    # -- plumbing
    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(self._request(self._http, call))
        except httpx.RequestError as exc:
            raise request_error(self.base_url, exc) from exc
        call.check(response)
        return call.parse(response)

    async def _stream(self, call: StreamCall[T]) -> AsyncIterator[T]:
        try:
            response = await self._http.send(self._request(self._http, call), stream=True)
        except httpx.RequestError as exc:
            raise request_error(self.base_url, exc) from exc
        try:
            if response.is_error:
                await response.aread()
                raise error_from_response(response)
            decoder = call.decoder()
            try:
                async for line in response.aiter_lines():
                    for item in decoder.feed(line):
                        yield item
                    if decoder.done:
                        return
            except httpx.RequestError as exc:
                raise request_error(self.base_url, exc) from exc
            for item in decoder.end():
                yield item
        finally:
            await response.aclose()

    # -- functions
    async def deploy(
        self,
        name: str,
        image: str | None = None,
        *,
        source: Path | None = None,
        spec: FunctionSpec | None = None,
        replace: bool = False,
        **options: Unpack[DeployOptions],
    ) -> Function:
        full, tar = _api.deploy_request(name, image, source, options, spec)
        try:
            return await self._call(_api.create_function(full, tar))
        except Conflict:
            if not replace:
                raise
            return await self._call(_api.update_function(full, tar))

    async def update(
        self, name: str, *, image: str | None = None, **options: Unpack[DeployOptions]
    ) -> Function:
        current = (await self.get_function(name)).spec()
        return await self._call(_api.update_function(_api.function_spec(name, image, options, current)))

    async def get_function(self, name: str) -> Function:
        return await self._call(_api.get_function(name))

    async def list_functions(self) -> list[Function]:
        return await self._call(_api.list_functions())

    async def delete_function(self, name: str) -> None:
        await self._call(_api.delete_function(name))

    async def scale(
        self, name: str, replicas: int | None = None, *, min: int | None = None, max: int | None = None
    ) -> ScaleResult:
        return await self._call(_api.scale_function(name, replicas, min, max))

    async def function_logs(
        self, name: str, *, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        return await self._call(_api.function_logs(name, tail, since))

    def logs(
        self, name: str, *, follow: bool = True, tail: int | None = None, since: str | None = None
    ) -> AsyncIterator[LogLine]:
        return self._stream(_api.follow_logs(name, tail, since, follow))

    # -- invoke
    async def invoke(
        self,
        name: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult:
        return await self._call(
            _api.invoke(name, data, content_type=content_type, headers=headers, query=query, timeout=timeout)
        )

    async def invoke_async(
        self,
        name: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        callback_url: str | None = None,
    ) -> AsyncExecutionHandle:
        accepted = await self._call(
            _api.invoke_async(
                name, data, content_type=content_type, headers=headers, query=query, callback_url=callback_url
            )
        )
        return AsyncExecutionHandle(self, accepted.execution_id, accepted.status_url)

    def invoke_stream(
        self,
        name: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        return self._stream(
            _api.invoke_stream(name, data, content_type=content_type, headers=headers, query=query)
        )

    # -- executions
    async def get_execution(self, execution_id: str) -> Execution:
        return await self._call(_api.get_execution(execution_id))

    async def list_executions(
        self, *, function: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Execution]:
        return await self._call(_api.list_executions(function, status, limit))

    async def execution_logs(self, execution_id: str) -> ExecutionLogs:
        return await self._call(_api.execution_logs(execution_id))

    def execution(self, execution_id: str) -> AsyncExecutionHandle:
        return AsyncExecutionHandle(self, execution_id)

    # -- one-off execute
    async def execute(
        self,
        command: list[str] | str | None = None,
        *,
        code: str | None = None,
        language: str | None = None,
        **options: Unpack[ExecuteOptions],
    ) -> ExecuteResult:
        return await self._call(_api.execute(command, code, language, options))

    # -- the seed SDK's conveniences
    async def run_python(self, code: str, **options: Unpack[ExecuteOptions]) -> ExecuteResult:
        """Run Python code (``python3 -c``) once, on ``faasd/python:latest`` unless ``image`` is given."""
        return await self.execute(code=code, language="python", **options)

    async def run_javascript(self, code: str, **options: Unpack[ExecuteOptions]) -> ExecuteResult:
        """Run JavaScript (``node -e``) once, on ``faasd/node:latest`` unless ``image`` is given."""
        return await self.execute(code=code, language="node", **options)

    async def run_bash(self, script: str, **options: Unpack[ExecuteOptions]) -> ExecuteResult:
        """Run a shell script (``/bin/sh -c``) once."""
        return await self.execute(code=script, language="shell", **options)

    async def fork_execution(
        self, parent_id: str, command: list[str] | str, **options: Unpack[ExecuteOptions]
    ) -> ExecuteResult:
        """Run ``command`` in a copy of a checkpointed/persistent execution's state (or a snapshot's)."""
        return await self._call(_api.fork_execution(parent_id, command, options))

    async def fork(
        self, source: str, commands: list[list[str] | str], **options: Unpack[ExecuteOptions]
    ) -> list[ExecuteResult]:
        """Each command in its own copy of ``source`` (the ``branch_from``); results in order."""
        return await self._call(_api.fork(source, commands, options))

    async def prewarm(self, image: str, count: int = 1, *, runtime: str | None = None) -> dict[str, Any]:
        """Start ``count`` warm execute sandboxes of ``image``; returns the pool's state."""
        return await self._call(_api.prewarm(image, count, runtime))

    async def pools(self) -> dict[str, Any]:
        return await self._call(_api.pools())

    async def get_metrics(self, *, detailed: bool = False) -> dict[str, Any]:
        """Measured execution counts, cache hit rate, latency percentiles (``/api/v1/metrics``)."""
        return await self._call(_api.get_metrics(detailed))

    async def health_check(self) -> dict[str, Any]:
        """``GET /health``: status, uptime and component checks."""
        return await self._call(_api.health_check())

    # -- secrets
    async def list_secrets(self) -> list[Secret]:
        return await self._call(_api.list_secrets())

    async def create_secret(self, name: str, value: str) -> Secret:
        return await self._call(_api.create_secret(name, value))

    async def update_secret(self, name: str, value: str) -> Secret:
        return await self._call(_api.update_secret(name, value))

    async def delete_secret(self, name: str) -> None:
        await self._call(_api.delete_secret(name))

    # -- API keys
    async def list_api_keys(self) -> list[ApiKey]:
        return await self._call(_api.list_api_keys())

    async def create_api_key(
        self,
        name: str,
        scopes: list[str] | None = None,
        *,
        rate_limit_rps: float | None = None,
        burst: int | None = None,
        namespace: str | None = None,
    ) -> CreatedApiKey:
        call = _api.create_api_key(name, scopes or ["invoke"], rate_limit_rps, burst, namespace)
        return await self._call(call)

    async def list_namespaces(self) -> list[sm.Namespace]:
        return await self._call(_api.list_namespaces())

    async def get_namespace(self, name: str) -> sm.Namespace:
        return await self._call(_api.get_namespace(name))

    async def create_namespace(
        self,
        name: str,
        *,
        max_sandboxes: int | None = None,
        max_memory_mb: int | None = None,
        max_disk_mb: int | None = None,
        max_snapshots: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> sm.Namespace:
        quotas = _api.quotas(max_sandboxes, max_memory_mb, max_disk_mb, max_snapshots)
        return await self._call(_api.create_namespace(name, quotas, labels))

    async def set_namespace_quotas(self, name: str, **quotas: int | None) -> sm.Namespace:
        return await self._call(_api.set_namespace_quotas(name, quotas))

    async def delete_namespace(self, name: str) -> None:
        await self._call(_api.delete_namespace(name))

    async def delete_api_key(self, key_id: str) -> None:
        await self._call(_api.delete_api_key(key_id))

    # -- system
    async def health(self) -> Health:
        return await self._call(_api.health())

    async def info(self) -> Info:
        return await self._call(_api.info())

    async def metrics(self) -> str:
        return await self._call(_api.metrics())

    # -- snapshots, restored sandboxes, branches, merges
    async def snapshot(
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
        return await self._call(_api.create_snapshot(sandbox_id, function, labels, timeout_s, instance_id))

    async def list_snapshots(self, *, function: str | None = None) -> list[sm.Snapshot]:
        return await self._call(_api.list_snapshots(function))

    async def get_snapshot(self, snapshot_id: str) -> sm.Snapshot:
        return await self._call(_api.get_snapshot(snapshot_id))

    async def delete_snapshot(self, snapshot_id: str, *, force: bool = False) -> None:
        await self._call(_api.delete_snapshot(snapshot_id, force))

    async def gc_snapshots(self) -> sm.SnapshotGcReport:
        return await self._call(_api.gc_snapshots())

    async def restore(self, snapshot_id: str, *, seed: int | None = None) -> sm.RestoredSandbox:
        """Start a new sandbox from a snapshot; invoke it with :meth:`invoke_sandbox`. With ``seed``
        it is copy 0 of :meth:`branch` with that seed."""
        return await self._call(_api.restore_snapshot(snapshot_id, seed))

    async def branch(
        self, snapshot_id: str, count: int = 2, *, seed: int | None = None
    ) -> list[sm.RestoredSandbox]:
        """``count`` copies of a snapshot, in copy order. With ``seed`` copy ``k``'s random generators
        are seeded from (seed, k): the same call repeats the same random sequences per copy."""
        return await self._call(_api.branch_snapshot(snapshot_id, count, seed))

    async def merge(
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
        return await self._call(
            _api.merge(
                snapshot_ids or [], sandbox_ids or [], strategy, labels, instance_ids or [], branches or []
            )
        )

    async def list_sandboxes(self) -> list[sm.RestoredSandbox]:
        return await self._call(_api.list_sandboxes())

    async def get_sandbox(self, sandbox_id: str) -> sm.RestoredSandbox:
        return await self._call(_api.get_sandbox(sandbox_id))

    async def delete_sandbox(self, sandbox_id: str) -> None:
        await self._call(_api.delete_sandbox(sandbox_id))

    async def invoke_sandbox(
        self,
        sandbox_id: str,
        data: Body = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult:
        return await self._call(
            _api.invoke_sandbox(sandbox_id, data, content_type=content_type, headers=headers, timeout=timeout)
        )
