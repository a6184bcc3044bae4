"""Function routes: deploy (image or source), update, get, list, delete, scale, logs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from faasd.sdk._api.calls import API, Call, _model, _none, _p
from faasd.sdk._api.source import pack_source
from faasd.sdk.models import Function, FunctionSpec, LogLine, ScaleResult, request_from


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
    data: dict[str, Any] = base.to_json() if base is not None else {}
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
        data["limits"] = limits
    if scale:
        data["scale"] = scale
    return request_from(data, FunctionSpec, "deploy")


BASE_IMAGES = {"python": "faasd/python:latest", "node": "faasd/node:latest"}


def default_image(runtime: str | None) -> str:
    """The base image a source deploy builds on when no image is given."""
    return BASE_IMAGES.get(runtime or "python", BASE_IMAGES["python"])


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
    return Call("POST", f"{API}/functions", _model(Function), **_function_body(spec, source))


def update_function(spec: FunctionSpec, source: bytes | None = None) -> Call[Function]:
    return Call(
        "PUT",
        f"{API}/functions/{_p(spec.name)}",
        _model(Function),
        **_function_body(spec, source),
    )


def get_function(name: str) -> Call[Function]:
    return Call("GET", f"{API}/functions/{_p(name)}", _model(Function))


def list_functions() -> Call[list[Function]]:
    return Call("GET", f"{API}/functions", _model(list[Function], "functions"))


def delete_function(name: str) -> Call[None]:
    return Call("DELETE", f"{API}/functions/{_p(name)}", _none)


def scale_function(name: str, replicas: int | None, min: int | None, max: int | None) -> Call[ScaleResult]:
    body = {k: v for k, v in (("replicas", replicas), ("min", min), ("max", max)) if v is not None}
    if not body:
        raise ValueError("scale needs replicas, min or max")
    return Call("POST", f"{API}/functions/{_p(name)}/scale", _model(ScaleResult), json=body)


def function_logs(name: str, tail: int | None, since: str | None) -> Call[list[LogLine]]:
    params = {k: v for k, v in (("tail", tail), ("since", since)) if v is not None}
    return Call(
        "GET", f"{API}/functions/{_p(name)}/logs", _model(list[LogLine], "lines"), params=params
    )
