"""Named, long-lived instances: lifecycle, exec, files, exposed ports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from faasd.sdk import models as sm
from faasd.sdk._api.calls import API, Call, _model, _none, _p

INSTANCE_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Starting/stopping an instance stores or restores a filesystem (and maybe a CRIU image)."""


def start_instance(**fields: Any) -> Call[sm.Instance]:
    """``fields`` as in the clients' ``start_instance``; ``None`` values are left to the server's defaults."""
    body = {k: v for k, v in fields.items() if v is not None}
    return Call(
        "POST",
        f"{API}/instances",
        _model(sm.Instance),
        json=body,
        timeout=INSTANCE_TIMEOUT,
    )


def list_instances() -> Call[list[sm.Instance]]:
    return Call("GET", f"{API}/instances", _model(list[sm.Instance], "instances"))


def get_instance(instance_id: str) -> Call[sm.Instance]:
    return Call("GET", f"{API}/instances/{_p(instance_id)}", _model(sm.Instance))


def delete_instance(instance_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/instances/{_p(instance_id)}", _none, timeout=INSTANCE_TIMEOUT)


def instance_action(instance_id: str, action: str) -> Call[sm.Instance]:
    if action not in ("start", "stop", "pause", "resume"):
        raise ValueError(f"unknown instance action {action!r}")
    return Call(
        "POST",
        f"{API}/instances/{_p(instance_id)}/{action}",
        _model(sm.Instance),
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
        _model(sm.InstanceExecResult),
        json=body,
        timeout=httpx.Timeout(timeout_s + 60.0, connect=10.0),
    )


def upload_instance_tar(instance_id: str, path: str, archive: bytes) -> Call[sm.UploadResult]:
    return Call(
        "PUT",
        f"{API}/instances/{_p(instance_id)}/files",
        _model(sm.UploadResult),
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
        _model(sm.UploadResult),
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
        "POST", f"{API}/instances/{_p(instance_id)}/ports", _model(sm.InstancePort), json=body
    )
