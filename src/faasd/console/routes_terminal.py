"""An instance's terminal over a WebSocket, and a directory listing for the console's file browser.

The terminal runs each line the user enters with the platform's instance exec (``/bin/sh -c`` inside the
instance, its limits and seccomp profile, the instance's env), in the directory the previous line left
(``cd`` persists); stdout/stderr, the exit code and the new directory are sent back as JSON messages.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faasd.api.auth import ANONYMOUS
from faasd.api.namespacing import require_unbound
from faasd.console.deps import CONSOLE, console_of, deploy_scope, platform_of
from faasd.console.session import COOKIE, check_origin
from faasd.errors import AuthError, FaasdError, NotFoundError
from faasd.platform.core import Platform
from faasd.platform.errors import UnavailableError
from faasd.platform.instances import ExecCommand, InstanceService
from faasd.platform.keys import KeyInfo

router = APIRouter(prefix="/ui/api")

MARK = "\x1e"
RUN_LINE = (
    'cd -- "$1" 2>/dev/null || cd /; eval "$2"; __faasd_rc=$?; printf \'\\036%s\' "$(pwd)"; exit $__faasd_rc'
)
LIST_DIR = (
    'cd -- "$1" || exit 2; for f in * .[!.]* ..?*; do [ -e "$f" ] || [ -L "$f" ] || continue; '
    "stat -c '%F\t%s\t%Y\t%n' -- \"$f\"; done"
)
LINE_TIMEOUT_S = 120.0


def instances_of(p: Platform) -> InstanceService:
    if p.instances is None:
        raise UnavailableError("instances are not available: the daemon runs without a sandbox manager")
    return p.instances


def split_cwd(stdout: str, cwd: str) -> tuple[str, str]:
    """The command's own output and the directory it ended in (``cwd`` if it exited early)."""
    out, sep, new = stdout.rpartition(MARK)
    if not sep or "\n" in new or not new.startswith("/"):
        return stdout, cwd
    return out, new


class Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern="^run$")
    line: str = Field(max_length=64 * 1024)


def _ws_key(ws: WebSocket, p: Platform) -> KeyInfo:
    """Authenticate a WebSocket like an HTTP request from the console: its own origin, a session."""
    check_origin(ws.headers)
    if not p.settings.auth:
        return ANONYMOUS
    sess = ws.app.state.console.sessions.get(ws.cookies.get(COOKIE))
    if sess is None:
        raise AuthError("sign in to the console first")
    key = p.keys.verify(sess.api_key)
    p.rate_limiter.check(key)
    return key


@router.websocket("/instances/{instance_id}/terminal")
async def terminal(ws: WebSocket, instance_id: str) -> None:
    p: Platform = ws.app.state.platform
    try:
        key = _ws_key(ws, p)
        key.require("deploy")
        require_unbound(key, CONSOLE)
        svc = instances_of(p)
        svc.get(instance_id)
    except FaasdError as exc:
        code = 4403 if exc.code in ("forbidden", "unauthorized") else 4404
        await ws.close(code=code, reason=exc.message[:120])
        return
    await ws.accept()
    cwd = "/"
    await ws.send_json({"type": "ready", "instance": instance_id, "cwd": cwd})
    try:
        while True:
            raw = await ws.receive_text()
            try:
                msg = Line.model_validate(json.loads(raw))
            except (ValueError, ValidationError) as exc:
                await ws.send_json({"type": "error", "message": f"bad message: {exc}"})
                continue
            try:
                res = await svc.exec(
                    instance_id,
                    ExecCommand(
                        args=["/bin/sh", "-c", RUN_LINE, "sh", cwd, msg.line], timeout_s=LINE_TIMEOUT_S
                    ),
                )
            except FaasdError as exc:
                await ws.send_json({"type": "error", "message": exc.message})
                continue
            out, cwd = split_cwd(str(res["stdout"]), cwd)
            await ws.send_json(
                {
                    "type": "exit",
                    "stdout": out,
                    "stderr": res["stderr"],
                    "code": res["exit_code"],
                    "timed_out": res["timed_out"],
                    "cwd": cwd,
                }
            )
    except WebSocketDisconnect:
        return


def parse_listing(text: str, path: str) -> list[dict[str, Any]]:
    kinds = {
        "directory": "dir",
        "regular file": "file",
        "regular empty file": "file",
        "symbolic link": "link",
    }
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split("\t", 3)
        if len(parts) != 4:
            continue
        kind, size, mtime, name = parts
        out.append(
            {
                "name": name,
                "path": (path.rstrip("/") + "/" + name) if path != "/" else "/" + name,
                "kind": kinds.get(kind, "other"),
                "size": int(size) if size.isdigit() else 0,
                "mtime": int(mtime) if mtime.isdigit() else 0,
            }
        )
    return sorted(out, key=lambda e: (e["kind"] != "dir", e["name"]))


@router.get("/instances/{instance_id}/ls")
async def list_dir(
    instance_id: str, request: Request, path: str = Query("/", max_length=4096), _k: KeyInfo = deploy_scope
) -> dict[str, Any]:
    console_of(request)
    svc = instances_of(platform_of(request))
    res = await svc.exec(
        instance_id, ExecCommand(args=["/bin/sh", "-c", LIST_DIR, "sh", path], cwd="/", timeout_s=30)
    )
    if res["exit_code"] == 2:
        raise NotFoundError(f"{path} is not a directory in instance {instance_id}", path=path)
    return {"path": path, "entries": parse_listing(str(res["stdout"]), path)}
