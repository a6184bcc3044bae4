"""Every API operation, once: how to build its request and how to read its response.

``Client`` and ``AsyncClient`` only send these ``Call``/``StreamCall`` descriptions with their own
httpx client, so the two stay thin and cannot drift apart. New route families (snapshots, branches,
instances, jobs) are added here as functions returning a ``Call`` plus a one-line method on each client.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from faasd.sdk import models as sm
from faasd.sdk._streams import SSEDecoder, decode_ndjson_line
from faasd.sdk.errors import ProtocolError, error_from_response
from faasd.sdk.models import (
    ApiKey,
    CreatedApiKey,
    ExecuteRequest,
    ExecuteResult,
    Execution,
    ExecutionAccepted,
    ExecutionLogs,
    Function,
    FunctionSpec,
    Health,
    Info,
    InvokeResult,
    Limits,
    LogLine,
    ScaleBounds,
    ScaleResult,
    Secret,
    StreamEvent,
    StreamOutput,
    StreamResult,
    StreamStart,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
API = "/api/v1"

# Error codes that, on the invoke route, come from the platform even when the function was started.
_PLATFORM_INVOKE_ERRORS = frozenset(
    {
        "timeout",
        "capacity_exhausted",
        "rate_limited",
        "resource_limit",
        "runtime_failure",
        "payload_too_large",
        "unauthorized",
        "forbidden",
    }
)


def check(response: httpx.Response) -> None:
    if response.is_error:
        raise error_from_response(response)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.request.url} answered HTTP {response.status_code} "
            f"with a body that is not JSON: {response.text[:200]!r}"
        ) from exc


def _model(adapter: TypeAdapter[T], key: str | None = None) -> Callable[[httpx.Response], T]:
    def parse(response: httpx.Response) -> T:
        body = _json(response)
        if key is not None:
            if not isinstance(body, dict) or key not in body:
                raise ProtocolError(f"expected a JSON object with {key!r} from {response.request.url}")
            body = body[key]
        try:
            return adapter.validate_python(body)
        except ValidationError as exc:
            raise ProtocolError(
                f"unexpected answer from {response.request.method} {response.request.url}: "
                f"{exc.error_count()} field error(s), first: {exc.errors()[0]['msg']} at "
                f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}"
            ) from exc

    return parse


def _none(response: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    files: Mapping[str, tuple[str | None, bytes, str]] | None = None
    headers: Mapping[str, str] | None = None
    timeout: httpx.Timeout | None = None
    """None: the client's default."""
    check: Callable[[httpx.Response], None] = check


class LineDecoder(Protocol[T_co]):
    done: bool

    def feed(self, line: str) -> Sequence[T_co]: ...

    def end(self) -> Sequence[T_co]: ...


@dataclass(frozen=True)
class StreamCall(Generic[T]):
    method: str
    path: str
    decoder: Callable[[], LineDecoder[T]]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    files: Mapping[str, tuple[str | None, bytes, str]] | None = None
    headers: Mapping[str, str] | None = None
    timeout: httpx.Timeout | None = None


def _p(segment: str) -> str:
    return quote(segment, safe="")


# ---------------------------------------------------------------------------------------------- functions


class DeployOptions(TypedDict, total=False):
    """Keyword arguments of ``deploy``/``update``: the fields of :class:`FunctionSpec`, flattened."""

    runtime: str
    handler: str
    command: list[str]
    port: int
    env: Mapping[str, str]
    secrets: list[str]
    memory_mb: int
    cpu_cores: float
    pids: int
    timeout_s: float
    disk_mb: int
    min_replicas: int
    max_replicas: int
    concurrency: int
    queue_size: int
    idle_ttl_s: float
    mode: str
    branch_from: str
    network: str
    isolation: str
    labels: Mapping[str, str]


_LIMIT_FIELDS = ("memory_mb", "cpu_cores", "pids", "timeout_s", "disk_mb")


def function_spec(
    name: str,
    image: str | None,
    options: DeployOptions,
    base: FunctionSpec | None = None,
) -> FunctionSpec:
    """Merge flattened options over ``base`` (an existing spec, for updates) into a :class:`FunctionSpec`."""
    data: dict[str, Any] = base.model_dump(exclude_none=True) if base is not None else {}
    data["name"] = name
    if image is not None:
        data["image"] = image
    if "image" not in data:
        raise ValueError("an image is required to deploy a function")
    opts: dict[str, Any] = dict(options)
    limits = dict(data.get("limits") or {})
    for key in _LIMIT_FIELDS:
        if opts.get(key) is not None:
            limits[key] = opts.pop(key)
        opts.pop(key, None)
    scale = dict(data.get("scale") or {})
    for key, field in (("min_replicas", "min"), ("max_replicas", "max")):
        if opts.get(key) is not None:
            scale[field] = opts.pop(key)
        opts.pop(key, None)
    for key, value in opts.items():
        if value is not None:
            data[key] = dict(value) if isinstance(value, Mapping) else value
    if limits:
        data["limits"] = Limits(**limits)
    if scale:
        data["scale"] = ScaleBounds(**scale)
    return FunctionSpec.model_validate(data)


BASE_IMAGES = {"python": "faasd/python:latest", "node": "faasd/node:latest"}


def default_image(runtime: str | None) -> str:
    """The base image a source deploy builds on when no image is given."""
    return BASE_IMAGES.get(runtime or "python", BASE_IMAGES["python"])


_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


def pack_source(directory: Path) -> bytes:
    """A reproducible ``tar.gz`` of a function's source directory (sorted, zeroed owners and times)."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory; pass the folder holding the function's code")
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _walk(directory):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(directory).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return buf.getvalue()


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name in _SKIP_DIRS or entry.suffix == ".pyc":
            continue
        out.append(entry)
        if entry.is_dir() and not entry.is_symlink():
            out.extend(_walk(entry))
    return out


def _function_body(spec: FunctionSpec, source: bytes | None) -> dict[str, Any]:
    if source is None:
        return {"json": spec.to_json()}
    return {
        "files": {
            "function": (None, json.dumps(spec.to_json()).encode(), "application/json"),
            "source": ("source.tar.gz", source, "application/gzip"),
        }
    }


def deploy_request(
    name: str, image: str | None, source: Path | None, options: DeployOptions, base: FunctionSpec | None
) -> tuple[FunctionSpec, bytes | None]:
    if source is None:
        return function_spec(name, image, options, base), None
    if image is None and (base is None or not base.image):
        image = default_image(options.get("runtime") or (base.runtime if base else None))
    return function_spec(name, image, options, base), pack_source(Path(source))


def create_function(spec: FunctionSpec, source: bytes | None = None) -> Call[Function]:
    return Call("POST", f"{API}/functions", _model(TypeAdapter(Function)), **_function_body(spec, source))


def update_function(spec: FunctionSpec, source: bytes | None = None) -> Call[Function]:
    return Call(
        "PUT",
        f"{API}/functions/{_p(spec.name)}",
        _model(TypeAdapter(Function)),
        **_function_body(spec, source),
    )


def get_function(name: str) -> Call[Function]:
    return Call("GET", f"{API}/functions/{_p(name)}", _model(TypeAdapter(Function)))


def list_functions() -> Call[list[Function]]:
    return Call("GET", f"{API}/functions", _model(TypeAdapter(list[Function]), "functions"))


def delete_function(name: str) -> Call[None]:
    return Call("DELETE", f"{API}/functions/{_p(name)}", _none)


def scale_function(name: str, replicas: int | None, min: int | None, max: int | None) -> Call[ScaleResult]:
    body = {k: v for k, v in (("replicas", replicas), ("min", min), ("max", max)) if v is not None}
    if not body:
        raise ValueError("scale needs replicas, min or max")
    return Call("POST", f"{API}/functions/{_p(name)}/scale", _model(TypeAdapter(ScaleResult)), json=body)


def function_logs(name: str, tail: int | None, since: str | None) -> Call[list[LogLine]]:
    params = {k: v for k, v in (("tail", tail), ("since", since)) if v is not None}
    return Call(
        "GET", f"{API}/functions/{_p(name)}/logs", _model(TypeAdapter(list[LogLine]), "lines"), params=params
    )


# ---------------------------------------------------------------------------------------------- invoke

Body = bytes | str | dict[str, Any] | list[Any] | None


def encode_body(data: Body, content_type: str | None) -> tuple[bytes, dict[str, str]]:
    headers: dict[str, str] = {}
    if data is None:
        content = b""
    elif isinstance(data, bytes):
        content = data
        headers["content-type"] = "application/octet-stream"
    elif isinstance(data, str):
        content = data.encode()
        headers["content-type"] = "text/plain; charset=utf-8"
    else:
        content = json.dumps(data).encode()
        headers["content-type"] = "application/json"
    if content_type:
        headers["content-type"] = content_type
    return content, headers


def _invoke_headers(
    data: Body,
    content_type: str | None,
    headers: Mapping[str, str] | None,
) -> tuple[bytes, dict[str, str]]:
    content, hdrs = encode_body(data, content_type)
    hdrs.update(headers or {})
    return content, hdrs


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _float_header(headers: httpx.Headers, name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


def _check_invoke(response: httpx.Response) -> None:
    """A response carrying ``X-Execution-Id`` is the function's own, even 4xx/5xx: not an API error."""
    if not response.is_error:
        return
    has_execution = "x-execution-id" in response.headers or "x-call-id" in response.headers
    if not has_execution or _error_code(response) in _PLATFORM_INVOKE_ERRORS:
        raise error_from_response(response)


def _parse_invoke(response: httpx.Response) -> InvokeResult:
    cold = response.headers.get("x-cold-start")
    return InvokeResult(
        status_code=response.status_code,
        headers=response.headers,
        content=response.content,
        execution_id=response.headers.get("x-execution-id") or response.headers.get("x-call-id"),
        cold_start=None if cold is None else cold.lower() == "true",
        duration_ms=_float_header(response.headers, "x-duration-ms"),
    )


INVOKE_TIMEOUT_S = 3600.0 + 60.0
"""Default wait for a sync invoke: the longest function ``timeout_s`` the daemon allows, plus slack
(the daemon answers 504 itself when the function's own time-out passes)."""


def invoke(
    name: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    query: Mapping[str, str] | None,
    timeout: float | None,
) -> Call[InvokeResult]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    return Call(
        "POST",
        f"{API}/functions/{_p(name)}/invoke",
        _parse_invoke,
        params=query,
        content=content,
        headers=hdrs,
        timeout=httpx.Timeout(timeout or INVOKE_TIMEOUT_S, connect=10.0),
        check=_check_invoke,
    )


def invoke_async(
    name: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    query: Mapping[str, str] | None,
    callback_url: str | None,
) -> Call[ExecutionAccepted]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    if callback_url:
        hdrs["x-callback-url"] = callback_url
    return Call(
        "POST",
        f"{API}/functions/{_p(name)}/invoke-async",
        _model(TypeAdapter(ExecutionAccepted)),
        params=query,
        content=content,
        headers=hdrs,
    )


class InvokeStreamDecoder:
    """SSE events of ``invoke-stream`` → typed events; an ``error`` event raises the mapped API error."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.done = False

    def feed(self, line: str) -> list[StreamEvent]:
        event = self._sse.decode(line)
        return self._convert(event) if event is not None else []

    def end(self) -> list[StreamEvent]:
        event = self._sse.flush()
        out = self._convert(event) if event is not None else []
        if not self.done:
            raise ProtocolError(
                "the invocation stream ended before its result event; the daemon may have "
                "restarted, check `faas logs` and the execution"
            )
        return out

    def _convert(self, event: Any) -> list[StreamEvent]:
        if self.done:
            return []
        if event.event == "start":
            data = event.json()
            return [
                StreamStart(execution_id=str(data.get("execution_id")), cold_start=data.get("cold_start"))
            ]
        if event.event in ("stdout", "stderr"):
            return [StreamOutput(stream=event.event, text=event.data)]
        if event.event == "result":
            self.done = True
            data = event.json()
            raw = str(data.get("body") or "")
            if data.get("body_encoding") == "base64":
                import base64

                body = base64.b64decode(raw)
            else:
                body = raw.encode()
            return [
                StreamResult(
                    execution_id=data.get("execution_id"),
                    status=str(data.get("status")),
                    http_status=data.get("http_status"),
                    body=body,
                    headers=dict(data.get("headers") or {}),
                    duration_ms=data.get("duration_ms"),
                    error=data.get("error"),
                    exit_code=data.get("exit_code"),
                )
            ]
        if event.event == "error":
            self.done = True
            raise _error_from_event(event.json())
        return []  # unknown event types (e.g. future progress events) are skipped


def _error_from_event(body: Any) -> Exception:
    request = httpx.Request("POST", "http://stream/")
    response = httpx.Response(_status_for_code(body), json=body, request=request)
    return error_from_response(response)


def _status_for_code(body: Any) -> int:
    from faasd.sdk.errors import _BY_CODE

    code = body.get("error") if isinstance(body, dict) else None
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    return cls.status if cls is not None else 500


def invoke_stream(
    name: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    query: Mapping[str, str] | None,
) -> StreamCall[StreamEvent]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    hdrs["accept"] = "text/event-stream"
    return StreamCall(
        "POST",
        f"{API}/functions/{_p(name)}/invoke-stream",
        InvokeStreamDecoder,
        params=query,
        content=content,
        headers=hdrs,
        timeout=httpx.Timeout(None, connect=10.0),
    )


# ---------------------------------------------------------------------------------------------- executions


def get_execution(execution_id: str) -> Call[Execution]:
    return Call("GET", f"{API}/executions/{_p(execution_id)}", _model(TypeAdapter(Execution)))


def list_executions(function: str | None, status: str | None, limit: int | None) -> Call[list[Execution]]:
    pairs = (("function", function), ("status", status), ("limit", limit))
    params = {k: v for k, v in pairs if v is not None}
    return Call("GET", f"{API}/executions", _model(TypeAdapter(list[Execution]), "executions"), params=params)


def execution_logs(execution_id: str) -> Call[ExecutionLogs]:
    return Call("GET", f"{API}/executions/{_p(execution_id)}/logs", _model(TypeAdapter(ExecutionLogs)))


def next_poll_delay(previous: float | None) -> float:
    """Back-off while waiting for an async execution: 50 ms doubling up to 1 s."""
    return 0.05 if previous is None else min(1.0, previous * 2)


# ---------------------------------------------------------------------------------------------- execute


class ExecuteOptions(TypedDict, total=False):
    image: str
    env_vars: Mapping[str, str]
    timeout_ms: int
    memory_mb: int
    cpu_cores: float
    working_dir: str
    stdin: str
    mode: str
    disk_mb: int
    pids: int
    isolation: str
    runtime: str
    cache_key: str
    snapshot_id: str
    branch_from: str
    workspace: str
    ttl_s: float


def _body(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in options.items() if v is not None}


def _run_timeout(options: Mapping[str, Any], runs: int = 1) -> httpx.Timeout:
    return httpx.Timeout(runs * (options.get("timeout_ms") or 30_000) / 1000 + 60.0, connect=10.0)


def fork_execution(
    parent_id: str, command: list[str] | str, options: Mapping[str, Any]
) -> Call[ExecuteResult]:
    return Call(
        "POST",
        f"{API}/executions/{quote(parent_id, safe='')}/fork",
        _model(TypeAdapter(ExecuteResult)),
        json={"command": command, **_body(options)},
        timeout=_run_timeout(options),
    )


def fork(
    branch_from: str, commands: list[list[str] | str], options: Mapping[str, Any]
) -> Call[list[ExecuteResult]]:
    return Call(
        "POST",
        f"{API}/fork",
        _model(TypeAdapter(list[ExecuteResult])),
        json={"branch_from": branch_from, "commands": commands, **_body(options)},
        timeout=_run_timeout(options, len(commands)),
    )


def prewarm(image: str, count: int, runtime: str | None) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"image": image, "count": count}
    if runtime is not None:
        body["runtime"] = runtime
    return Call("POST", f"{API}/prewarm", _obj, json=body, timeout=httpx.Timeout(300.0, connect=10.0))


def pools() -> Call[dict[str, Any]]:
    return Call("GET", f"{API}/pools", _obj)


def get_metrics(detailed: bool) -> Call[dict[str, Any]]:
    return Call("GET", f"{API}/metrics" + ("/detailed" if detailed else ""), _obj)


def health_check() -> Call[dict[str, Any]]:
    return Call("GET", "/health", _obj)


def _obj(r: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = _json(r)
    return data


def execute(
    command: list[str] | str | None, code: str | None, language: str | None, options: ExecuteOptions
) -> Call[ExecuteResult]:
    if (command is None) == (code is None):
        raise ValueError("execute needs either command or code (with language), not both")
    if code is not None and not language:
        raise ValueError("execute with code needs a language: python, node or shell")
    fields: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in options.items()}
    request = ExecuteRequest(command=command, code=code, language=language, **fields)
    timeout_ms = request.timeout_ms or 30_000
    return Call(
        "POST",
        f"{API}/execute",
        _model(TypeAdapter(ExecuteResult)),
        json=request.to_json(),
        timeout=httpx.Timeout(timeout_ms / 1000 + 60.0, connect=10.0),
    )


# ---------------------------------------------------------------------------------------------- secrets, keys


def list_secrets() -> Call[list[Secret]]:
    return Call("GET", f"{API}/secrets", _model(TypeAdapter(list[Secret]), "secrets"))


def create_secret(name: str, value: str) -> Call[Secret]:
    return Call("POST", f"{API}/secrets", _model(TypeAdapter(Secret)), json={"name": name, "value": value})


def update_secret(name: str, value: str) -> Call[Secret]:
    return Call("PUT", f"{API}/secrets/{_p(name)}", _model(TypeAdapter(Secret)), json={"value": value})


def delete_secret(name: str) -> Call[None]:
    return Call("DELETE", f"{API}/secrets/{_p(name)}", _none)


def list_api_keys() -> Call[list[ApiKey]]:
    return Call("GET", f"{API}/keys", _model(TypeAdapter(list[ApiKey]), "keys"))


def create_api_key(
    name: str,
    scopes: list[str],
    rate_limit_rps: float | None,
    burst: int | None,
) -> Call[CreatedApiKey]:
    body: dict[str, Any] = {"name": name, "scopes": scopes}
    if rate_limit_rps is not None:
        body["rate_limit_rps"] = rate_limit_rps
    if burst is not None:
        body["burst"] = burst
    return Call("POST", f"{API}/keys", _model(TypeAdapter(CreatedApiKey)), json=body)


def delete_api_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/keys/{_p(key_id)}", _none)


# ---------------------------------------------------------------------------------------------- system


def health() -> Call[Health]:
    return Call("GET", "/healthz", _model(TypeAdapter(Health)))


def info() -> Call[Info]:
    return Call("GET", f"{API}/info", _model(TypeAdapter(Info)))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text)


class LogFollowDecoder:
    """NDJSON lines of ``/system/logs`` → :class:`LogLine`."""

    def __init__(self) -> None:
        self.done = False

    def feed(self, line: str) -> list[LogLine]:
        obj = decode_ndjson_line(line)
        if obj is None:
            return []
        if "function" not in obj and "name" in obj:
            obj = {**obj, "function": obj["name"]}
        return [LogLine.model_validate(obj)]

    def end(self) -> list[LogLine]:
        return []


def follow_logs(name: str, tail: int | None, since: str | None, follow: bool) -> StreamCall[LogLine]:
    params: dict[str, Any] = {"name": name, "follow": "true" if follow else "false"}
    if tail is not None:
        params["tail"] = tail
    if since is not None:
        params["since"] = since
    return StreamCall(
        "GET",
        "/system/logs",
        LogFollowDecoder,
        params=params,
        headers={"accept": "application/x-ndjson"},
        timeout=httpx.Timeout(None, connect=10.0),
    )


# ---------------------------------------------------------------------------------------------- snapshots

SNAPSHOT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Checkpoint/restore/branch/merge move whole process images: allow much longer than the default."""


def create_snapshot(
    sandbox_id: str | None,
    function: str | None,
    labels: Mapping[str, str] | None,
    timeout_s: float | None,
    instance_id: str | None = None,
) -> Call[sm.Snapshot]:
    if [sandbox_id, function, instance_id].count(None) != 2:
        raise ValueError("snapshot needs exactly one of sandbox_id, instance_id or function")
    body: dict[str, Any] = {"labels": dict(labels or {})}
    if sandbox_id is not None:
        body["sandbox_id"] = sandbox_id
    if instance_id is not None:
        body["instance_id"] = instance_id
    if function is not None:
        body["function"] = function
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return Call(
        "POST", f"{API}/snapshots", _model(TypeAdapter(sm.Snapshot)), json=body, timeout=SNAPSHOT_TIMEOUT
    )


def list_snapshots(function: str | None) -> Call[list[sm.Snapshot]]:
    params = {"function": function} if function is not None else None
    return Call(
        "GET", f"{API}/snapshots", _model(TypeAdapter(list[sm.Snapshot]), "snapshots"), params=params
    )


def get_snapshot(snapshot_id: str) -> Call[sm.Snapshot]:
    return Call("GET", f"{API}/snapshots/{_p(snapshot_id)}", _model(TypeAdapter(sm.Snapshot)))


def delete_snapshot(snapshot_id: str, force: bool) -> Call[None]:
    params = {"force": "true"} if force else None
    return Call("DELETE", f"{API}/snapshots/{_p(snapshot_id)}", _none, params=params)


def gc_snapshots() -> Call[sm.SnapshotGcReport]:
    return Call(
        "POST", f"{API}/snapshots/gc", _model(TypeAdapter(sm.SnapshotGcReport)), timeout=SNAPSHOT_TIMEOUT
    )


def restore_snapshot(snapshot_id: str, seed: int | None = None) -> Call[sm.RestoredSandbox]:
    return Call(
        "POST",
        f"{API}/snapshots/{_p(snapshot_id)}/restore",
        _model(TypeAdapter(sm.RestoredSandbox)),
        json={"seed": seed} if seed is not None else None,
        timeout=SNAPSHOT_TIMEOUT,
    )


def branch_snapshot(snapshot_id: str, count: int, seed: int | None = None) -> Call[list[sm.RestoredSandbox]]:
    body: dict[str, Any] = {"count": count}
    if seed is not None:
        body["seed"] = seed
    return Call(
        "POST",
        f"{API}/snapshots/{_p(snapshot_id)}/branch",
        _model(TypeAdapter(list[sm.RestoredSandbox]), "sandboxes"),
        json=body,
        timeout=SNAPSHOT_TIMEOUT,
    )


def merge(
    snapshot_ids: Sequence[str],
    sandbox_ids: Sequence[str],
    strategy: str,
    labels: Mapping[str, str] | None,
    instance_ids: Sequence[str] = (),
    branches: Sequence[str] = (),
) -> Call[sm.MergeResult]:
    body: dict[str, Any] = {
        "snapshot_ids": list(snapshot_ids),
        "sandbox_ids": list(sandbox_ids),
        "strategy": strategy,
        "labels": dict(labels or {}),
    }
    if instance_ids:
        body["instance_ids"] = list(instance_ids)
    if branches:
        body["branches"] = list(branches)
    return Call(
        "POST", f"{API}/merges", _model(TypeAdapter(sm.MergeResult)), json=body, timeout=SNAPSHOT_TIMEOUT
    )


def list_sandboxes() -> Call[list[sm.RestoredSandbox]]:
    return Call("GET", f"{API}/sandboxes", _model(TypeAdapter(list[sm.RestoredSandbox]), "sandboxes"))


def get_sandbox(sandbox_id: str) -> Call[sm.RestoredSandbox]:
    return Call("GET", f"{API}/sandboxes/{_p(sandbox_id)}", _model(TypeAdapter(sm.RestoredSandbox)))


def delete_sandbox(sandbox_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/sandboxes/{_p(sandbox_id)}", _none)


def _check_sandbox_invoke(response: httpx.Response) -> None:
    """A response carrying ``X-Sandbox-Id`` is the function's own (even 4xx/5xx), unless a platform error."""
    if not response.is_error:
        return
    if "x-sandbox-id" not in response.headers or _error_code(response) in _PLATFORM_INVOKE_ERRORS:
        raise error_from_response(response)


def invoke_sandbox(
    sandbox_id: str,
    data: Body,
    *,
    content_type: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> Call[InvokeResult]:
    content, hdrs = _invoke_headers(data, content_type, headers)
    return Call(
        "POST",
        f"{API}/sandboxes/{_p(sandbox_id)}/invoke",
        _parse_invoke,
        content=content,
        headers=hdrs,
        timeout=httpx.Timeout(timeout or INVOKE_TIMEOUT_S, connect=10.0),
        check=_check_sandbox_invoke,
    )


# ---------------------------------------------------------------------------------------------- instances

INSTANCE_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Starting/stopping an instance stores or restores a filesystem (and maybe a CRIU image)."""


def start_instance(**fields: Any) -> Call[sm.Instance]:
    """``fields`` as in the clients' ``start_instance``; ``None`` values are left to the server's defaults."""
    body = {k: v for k, v in fields.items() if v is not None}
    return Call(
        "POST",
        f"{API}/instances",
        _model(TypeAdapter(sm.Instance)),
        json=body,
        timeout=INSTANCE_TIMEOUT,
    )


def list_instances() -> Call[list[sm.Instance]]:
    return Call("GET", f"{API}/instances", _model(TypeAdapter(list[sm.Instance]), "instances"))


def get_instance(instance_id: str) -> Call[sm.Instance]:
    return Call("GET", f"{API}/instances/{_p(instance_id)}", _model(TypeAdapter(sm.Instance)))


def delete_instance(instance_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/instances/{_p(instance_id)}", _none, timeout=INSTANCE_TIMEOUT)


def instance_action(instance_id: str, action: str) -> Call[sm.Instance]:
    if action not in ("start", "stop", "pause", "resume"):
        raise ValueError(f"unknown instance action {action!r}")
    return Call(
        "POST",
        f"{API}/instances/{_p(instance_id)}/{action}",
        _model(TypeAdapter(sm.Instance)),
        timeout=INSTANCE_TIMEOUT,
    )


def exec_instance(
    instance_id: str,
    command: Sequence[str] | str,
    *,
    stdin: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout_s: float = 60.0,
) -> Call[sm.InstanceExecResult]:
    import base64

    body: dict[str, Any] = {
        "command": command if isinstance(command, str) else list(command),
        "env": dict(env or {}),
        "timeout_s": timeout_s,
    }
    if isinstance(stdin, bytes):
        body["stdin_base64"] = base64.b64encode(stdin).decode()
    elif stdin is not None:
        body["stdin"] = stdin
    if cwd is not None:
        body["cwd"] = cwd
    return Call(
        "POST",
        f"{API}/instances/{_p(instance_id)}/exec",
        _model(TypeAdapter(sm.InstanceExecResult)),
        json=body,
        timeout=httpx.Timeout(timeout_s + 60.0, connect=10.0),
    )


def upload_instance_tar(instance_id: str, path: str, archive: bytes) -> Call[sm.UploadResult]:
    return Call(
        "PUT",
        f"{API}/instances/{_p(instance_id)}/files",
        _model(TypeAdapter(sm.UploadResult)),
        params={"path": path},
        content=archive,
        headers={"content-type": "application/x-tar"},
        timeout=INSTANCE_TIMEOUT,
    )


def upload_instance_files(
    instance_id: str, target_path: str, files: Mapping[str, bytes]
) -> Call[sm.UploadResult]:
    import base64

    body = {
        "target_path": target_path,
        "files": [{"path": p, "content": base64.b64encode(c).decode()} for p, c in files.items()],
    }
    return Call(
        "PUT",
        f"{API}/instances/{_p(instance_id)}/files",
        _model(TypeAdapter(sm.UploadResult)),
        json=body,
        timeout=INSTANCE_TIMEOUT,
    )


def download_instance(instance_id: str, path: str) -> Call[bytes]:
    return Call(
        "GET",
        f"{API}/instances/{_p(instance_id)}/files",
        lambda r: r.content,
        params={"path": path},
        timeout=INSTANCE_TIMEOUT,
    )


def expose_instance_port(
    instance_id: str, internal_port: int, protocol: str = "http", subdomain: str | None = None
) -> Call[sm.InstancePort]:
    body: dict[str, Any] = {"internal_port": internal_port, "protocol": protocol}
    if subdomain is not None:
        body["subdomain"] = subdomain
    return Call(
        "POST", f"{API}/instances/{_p(instance_id)}/ports", _model(TypeAdapter(sm.InstancePort)), json=body
    )


# ---------------------------------------------------------------------------------------------- jobs


def run_job(type_: int | str, args: Mapping[str, Any]) -> Call[sm.Job]:
    return Call(
        "POST",
        f"{API}/jobs",
        _model(TypeAdapter(sm.Job)),
        json={"type": type_, "args": dict(args)},
        timeout=httpx.Timeout(3600.0 + 60.0, connect=10.0),
    )


def get_job(job_id: str) -> Call[sm.Job]:
    return Call("GET", f"{API}/jobs/{_p(job_id)}", _model(TypeAdapter(sm.Job)))


PULL_TIMEOUT = httpx.Timeout(1800.0, connect=10.0)
"""Pulling or pushing moves whole images over the network."""


def pull_image(ref: str) -> Call[sm.Image]:
    return Call(
        "POST", f"{API}/images/pull", _model(TypeAdapter(sm.Image)), json={"ref": ref}, timeout=PULL_TIMEOUT
    )


def push_image(ref: str, source: str | None) -> Call[sm.PushResult]:
    body = {"ref": ref} if source is None else {"ref": ref, "source": source}
    return Call(
        "POST", f"{API}/images/push", _model(TypeAdapter(sm.PushResult)), json=body, timeout=PULL_TIMEOUT
    )
