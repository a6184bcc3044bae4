"""``GET /api/v1/containers/{id}/stream``: a WebSocket to a live instance or persistent execute workspace.

Client messages (JSON): ``{"type": "exec", "command": str | [argv], "env": {}, "cwd": str, "stdin": str}``
starts a process (one at a time) whose output streams back; ``{"type": "stdin", "data": str}`` (or
``"eof": true``) is forwarded to it; ``{"type": "get_state"}``; ``{"type": "stop"}`` kills the running
process, or with none running stops the instance (files kept) and closes; ``{"type": "checkpoint"}`` takes
a CRIU snapshot (processes + files; refused while an exec runs); ``{"type": "custom", ...}`` is echoed.

Server events (JSON): ``stdout``/``stderr`` (``data``), ``exit`` (``exit_code``), ``heartbeat`` (every
``heartbeat_s``, default 15), ``custom`` (``event``: ``state``, ``checkpoint``, ``stopped``, ``echo``),
``error`` (``error``, ``message``). Close codes: 4401 unauthorized, 4403 forbidden, 4404 unknown id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from faasd.api.auth import authenticate
from faasd.errors import (
    AuthError,
    ConflictError,
    FaasdError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from faasd.platform.core import Platform
from faasd.platform.exec_stream import StreamingExec
from faasd.platform.instances import instance_dict
from faasd.platform.namespaces import DEFAULT_NAMESPACE, Access

router = APIRouter()


def _instance_id(p: Platform, ref: str, access: Access) -> str:
    """The instance of ``ref`` (instance, its sandbox, or a workspace request id) if the caller may see it;
    else the same 404 as for an unknown id."""
    if p.instances is None:
        raise NotFoundError("this daemon runs without instances")
    found: str | None
    if p.seed is not None and ref in p.seed.workspaces:
        found = p.seed.workspaces[ref].instance_id
    else:
        found = p.instances.find(ref)
    if found is None or not access.sees(p.tenancy.instance_namespace(found) or DEFAULT_NAMESPACE):
        raise NotFoundError(f"no instance or persistent workspace {ref!r}", container=ref)
    return found


@router.websocket("/api/v1/containers/{container_id}/stream")
async def container_stream(websocket: WebSocket, container_id: str, heartbeat_s: float = 15.0) -> None:
    p: Platform = websocket.app.state.platform
    await websocket.accept()
    try:
        key = authenticate(websocket)
        key.require("invoke")
        inst_id = _instance_id(p, container_id, key.access)
    except FaasdError as exc:
        code = 4401 if isinstance(exc, AuthError) else 4403 if isinstance(exc, ForbiddenError) else 4404
        await websocket.send_json({"type": "error", "error": exc.code, "message": exc.message})
        await websocket.close(code=code)
        return
    assert p.instances is not None
    instances = p.instances
    lock = asyncio.Lock()

    async def send(obj: dict[str, Any]) -> None:
        async with lock:
            await websocket.send_json(obj)

    async def on_chunk(stream: str, data: bytes) -> None:
        await send({"type": stream, "data": data.decode("utf-8", "replace")})

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(max(0.1, heartbeat_s))
            await send({"type": "heartbeat", "ts": time.time()})

    current: StreamingExec | None = None
    waiter: asyncio.Task[None] | None = None

    async def finish(ex: StreamingExec) -> None:
        code = await ex.wait()
        await send({"type": "exit", "exit_code": code})

    beat = asyncio.get_running_loop().create_task(heartbeat())
    try:
        async with instances.use(inst_id) as sb:
            while True:
                msg = await websocket.receive_json()
                kind = msg.get("type") if isinstance(msg, dict) else None
                try:
                    if kind == "exec":
                        if current is not None and current.running:
                            raise ConflictError("a process is already running; wait for its exit or stop it")
                        cmd = msg.get("command")
                        args = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd
                        if (
                            not isinstance(args, list)
                            or not args
                            or not all(isinstance(a, str) for a in args)
                        ):
                            raise InvalidInputError(
                                "'command' must be a string or a non-empty list of strings"
                            )
                        env = msg.get("env") or {}
                        current = await StreamingExec.start(sb, args, on_chunk, env=env, cwd=msg.get("cwd"))
                        if isinstance(msg.get("stdin"), str):
                            await current.write_stdin(msg["stdin"].encode())
                        waiter = asyncio.get_running_loop().create_task(finish(current))
                    elif kind == "stdin":
                        if current is None or not current.running:
                            raise ConflictError("no process is running to take stdin")
                        if isinstance(msg.get("data"), str):
                            await current.write_stdin(msg["data"].encode())
                        if msg.get("eof"):
                            current.close_stdin()
                    elif kind == "get_state":
                        state = instance_dict(instances.get(inst_id))
                        running = current is not None and current.running
                        await send(
                            {
                                "type": "custom",
                                "event": "state",
                                "instance": state,
                                "process_running": running,
                            }
                        )
                    elif kind == "stop":
                        if current is not None and current.running:
                            await current.kill()
                        else:
                            await instances.stop(inst_id)
                            await send({"type": "custom", "event": "stopped", "instance_id": inst_id})
                            await websocket.close()
                            return
                    elif kind == "checkpoint":
                        if current is not None and current.running:
                            raise ConflictError("a process is running; checkpoint after its exit")
                        p.tenancy.check_new_snapshot(instances.get(inst_id).namespace)
                        snap = await instances.snapshot(inst_id, labels={"faasd.stream": container_id})
                        await send({"type": "custom", "event": "checkpoint", "snapshot_id": snap.id})
                    elif kind == "custom":
                        await send({"type": "custom", "event": "echo", "data": msg.get("data")})
                    else:
                        raise InvalidInputError(
                            f"unknown message type {kind!r}; use exec, stdin, get_state, stop, checkpoint"
                        )
                except FaasdError as exc:
                    await send({"type": "error", "error": exc.code, "message": exc.message})
    except WebSocketDisconnect:
        pass
    except FaasdError as exc:
        with contextlib.suppress(Exception):
            await send({"type": "error", "error": exc.code, "message": exc.message})
            await websocket.close(code=4409)
    finally:
        beat.cancel()
        if current is not None and current.running:
            await current.kill()
        if waiter is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(waiter, 10)
