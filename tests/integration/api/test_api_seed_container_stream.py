"""The WebSocket container stream against a real daemon: exec with streamed output, stdin forwarded to a
running process, get_state, checkpoint (a real CRIU snapshot), heartbeat, stop; on an instance and on a
persistent execute workspace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv:
        yield srv


async def _until(ws: Any, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 120))
        seen.append(msg)
        if msg["type"] == kind:
            return msg


def test_container_stream_on_an_instance(server: FaasdServer) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
        inst = http.post("/api/v1/instances", json={"image": "faasd/python:latest"}).json()
        url = (
            server.url.replace("http://", "ws://") + f"/api/v1/containers/{inst['id']}/stream?heartbeat_s=0.5"
        )

        async def session() -> None:
            async with websockets.connect(url, additional_headers=headers) as ws:
                seen: list[dict[str, Any]] = []
                await ws.send(
                    json.dumps({"type": "exec", "command": "echo one; echo err >&2; echo hi > /keep"})
                )
                assert (await _until(ws, "exit", seen))["exit_code"] == 0
                assert {"type": "stdout", "data": "one\n"} in seen and {
                    "type": "stderr",
                    "data": "err\n",
                } in seen
                # stdin forwarded to a running process, output streamed before it exits
                seen.clear()
                await ws.send(
                    json.dumps(
                        {"type": "exec", "command": ["sh", "-c", "read a; echo got:$a; read b; echo got:$b"]}
                    )
                )
                await ws.send(json.dumps({"type": "stdin", "data": "first\n"}))
                assert (await _until(ws, "stdout", seen))["data"] == "got:first\n"
                await ws.send(json.dumps({"type": "stdin", "data": "second\n", "eof": True}))
                assert (await _until(ws, "exit", seen))["exit_code"] == 0
                assert "got:second\n" in "".join(m.get("data", "") for m in seen if m["type"] == "stdout")
                await _until(ws, "heartbeat", [])
                await ws.send(json.dumps({"type": "get_state"}))
                state = await _until(ws, "custom", [])
                assert state["event"] == "state" and state["instance"]["status"] == "running"
                await ws.send(json.dumps({"type": "checkpoint"}))
                ck = await _until(ws, "custom", [])
                assert ck["event"] == "checkpoint" and ck["snapshot_id"].startswith("snap-")
                # stop a running process
                seen.clear()
                await ws.send(json.dumps({"type": "exec", "command": "sleep 300"}))
                await asyncio.sleep(0.5)
                await ws.send(json.dumps({"type": "stop"}))
                assert (await _until(ws, "exit", seen))["exit_code"] != 0
                await ws.send(json.dumps({"type": "bogus"}))
                assert (await _until(ws, "error", []))["error"] == "invalid_input"
                return_snap[0] = ck["snapshot_id"]

        return_snap: list[str] = [""]
        asyncio.run(session())
        # the checkpoint is a real snapshot: a branch of it has the file
        out = http.post(
            "/api/v1/execute",
            json={"mode": "branched", "branch_from": return_snap[0], "command": "cat /keep"},
        ).json()
        assert out["stdout"] == "hi\n"
        http.delete(f"/api/v1/instances/{inst['id']}")


def test_container_stream_on_a_workspace_and_refusals(server: FaasdServer) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
        ws_id = http.post("/api/v1/execute", json={"mode": "persistent", "command": "echo 5 > /n"}).json()[
            "request_id"
        ]
        base = server.url.replace("http://", "ws://") + "/api/v1/containers/"

        async def session() -> None:
            async with websockets.connect(base + ws_id + "/stream", additional_headers=headers) as ws:
                seen: list[dict[str, Any]] = []
                await ws.send(json.dumps({"type": "exec", "command": "cat /n"}))
                await _until(ws, "exit", seen)
                assert {"type": "stdout", "data": "5\n"} in seen
            async with websockets.connect(base + "in-nope/stream", additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["error"] == "not_found"
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 4404
            async with websockets.connect(base + ws_id + "/stream") as ws:  # no key
                assert json.loads(await ws.recv())["error"] == "unauthorized"

        asyncio.run(session())
