"""Direct function addresses at the runtime level: a listening socket bound on the host is handed into
the sandbox over SCM_RIGHTS and the agent serves HTTP on it (Python in-process and fork, Node)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from faasd.errors import ConflictError
from faasd.runtime import Limits
from faasd.runtime.direct import HANDOVER_SOCKET_NAME, bind_listener
from faasd.runtime.workers import InvokeRequest, Worker, WorkerSpec

pytestmark = pytest.mark.integration

LIMITS = Limits(memory_mb=128, timeout_s=5)

PY_HANDLER = """
import os
N = {"n": 0}

def handle(event, context):
    N["n"] += 1
    if event.path == "/boom":
        raise ValueError("boom")
    if event.path == "/headers":
        return {"statusCode": 201, "headers": {"x-fn": "yes"}, "body": "made"}
    return {"n": N["n"], "pid": os.getpid(), "method": event.method, "path": event.path, "query": event.query,
            "body": event.text, "fn": context.function_name, "h": event.headers.get("x-test")}
"""

NODE_HANDLER = """
let n = 0;
module.exports = async (event, context) => {
  n += 1;
  if (event.path === '/boom') throw new RangeError('out of range');
  return { n, pid: process.pid, method: event.method, path: event.path, query: event.query, body: event.text,
           fn: context.functionName, h: event.headers['x-test'] || null };
};
"""


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _check_handover(w: Worker, listener: socket.socket, agent_pid: int) -> None:
    """The agent holds the very socket the host bound (same inode: passed, not re-created), the sandbox
    has its own network namespace with nothing but lo, and the hand-over socket is gone."""
    assert w.direct
    assert os.fstat(listener.fileno()).st_ino in _socket_inodes(agent_pid)
    assert os.readlink(f"/proc/{agent_pid}/ns/net") != os.readlink("/proc/self/ns/net")
    links = subprocess.run(
        ["nsenter", "-t", str(agent_pid), "-n", "ip", "-o", "link"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert not (Path(w.sandbox.io_dir) / HANDOVER_SOCKET_NAME).exists()  # type: ignore[attr-defined]


def _agent_pid(w: Worker, mode: str) -> int:
    pid = w.sandbox.pid  # type: ignore[attr-defined]
    assert pid is not None
    if mode == "python":
        return int(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])  # node runs under faasd-init


@pytest.mark.parametrize("fork", [False, True])
async def test_python_agent_serves_inherited_socket(
    workers, python_rootfs: Path, code_layer, fork: bool
) -> None:
    layer = code_layer({"function/handler.py": PY_HANDLER})
    listener = bind_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    try:
        spec = WorkerSpec(
            function="py-direct",
            lowers=[python_rootfs, layer],
            limits=LIMITS,
            fork_per_request=fork,
            direct_listener=listener,
        )
        w1 = await workers(spec)
        w2 = await workers(spec)  # a second worker shares the same listening socket
        for w in (w1, w2):
            _check_handover(w, listener, _agent_pid(w, "python"))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            r = await client.post("/hello?x=1", content=b"payload", headers={"x-test": "t"})
            assert r.status_code == 200, r.text
            d = r.json()
            assert (d["method"], d["path"], d["query"], d["body"], d["fn"], d["h"]) == (
                "POST",
                "/hello",
                "x=1",
                "payload",
                "py-direct",
                "t",
            )
            r = await client.get("/headers")
            assert (r.status_code, r.headers["x-fn"], r.text) == (201, "yes", "made")
            r = await client.get("/boom")
            assert r.status_code == 500 and "boom" in r.text
            for _ in range(20):  # keep-alive connection reused
                assert (await client.get("/")).status_code == 200
        # The gateway path (agent socket) keeps working alongside.
        res = await w1.invoke(InvokeRequest(body=b"via-agent"))
        assert json.loads(res.body)["body"] == "via-agent"
        served = sum([(await w.ping())["direct_requests"] for w in (w1, w2)])
        assert served == 23
        await w1.unlisten()  # before a checkpoint: the agent drops its copy, w2 keeps serving
        assert os.fstat(listener.fileno()).st_ino not in _socket_inodes(_agent_pid(w1, "python"))
        assert (await w1.ping())["direct"] is False
        async with httpx.AsyncClient(base_url=base) as client:
            assert all([(await client.get("/")).status_code == 200 for _ in range(5)])
        assert (await w2.ping())["direct_requests"] >= 5
    finally:
        listener.close()


async def test_node_agent_serves_inherited_socket(workers, node_rootfs: Path, code_layer) -> None:
    layer = code_layer({"function/handler.js": NODE_HANDLER})
    listener = bind_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    try:
        w = await workers(
            WorkerSpec(
                function="node-direct",
                mode="node",
                lowers=[node_rootfs, layer],
                limits=LIMITS,
                direct_listener=listener,
            )
        )
        _check_handover(w, listener, _agent_pid(w, "node"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.put("/p?q=2", content=b"js", headers={"x-test": "n"})
            assert r.status_code == 200, r.text
            d = r.json()
            assert (d["method"], d["path"], d["query"], d["body"], d["fn"], d["h"]) == (
                "PUT",
                "/p",
                "q=2",
                "js",
                "node-direct",
                "n",
            )
            r = await client.get("/boom")
            assert r.status_code == 500 and "out of range" in r.text
        res = await w.invoke(InvokeRequest(body=b"agent"))
        assert json.loads(res.body)["body"] == "agent"
        pong = await w.ping()
        assert pong["direct"] is True and pong["direct_requests"] == 2
        await w.unlisten()
        assert not w.direct and (await w.ping())["direct"] is False
        assert os.fstat(listener.fileno()).st_ino not in _socket_inodes(_agent_pid(w, "node"))
    finally:
        listener.close()


HTTP_SERVER = """
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = {"path": self.path, "echo": data.decode(), "x": self.headers.get("X-Test")}
        body = json.dumps(out).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 9090), Handler).serve_forever()
"""


async def test_http_mode_relays_inherited_socket(workers, python_rootfs: Path, code_layer) -> None:
    """http mode: faasd-init takes the socket and relays each connection to the server's port inside the
    sandbox (the server itself knows nothing about it)."""
    layer = code_layer({"app/server.py": HTTP_SERVER})
    listener = bind_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    try:
        w = await workers(
            WorkerSpec(
                function="http-direct",
                mode="http",
                lowers=[python_rootfs, layer],
                command=["python3", "/app/server.py"],
                port=9090,
                limits=LIMITS,
                direct_listener=listener,
            )
        )
        pid = w.sandbox.pid  # type: ignore[attr-defined]
        assert pid is not None
        forwarder = [
            int(c)
            for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if os.fstat(listener.fileno()).st_ino in _socket_inodes(int(c))
        ]
        assert forwarder, "no child of faasd-init holds the listening socket"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for i in range(5):
                r = await client.post(f"/p{i}?q=1", content=b"relayed", headers={"x-test": "h"})
                assert r.status_code == 201, r.text
                assert r.json() == {"path": f"/p{i}?q=1", "echo": "relayed", "x": "h"}
        got = await w.invoke(InvokeRequest(method="POST", path="/gw", body=b"gateway"))  # gateway path too
        assert got.status == 201 and json.loads(got.body)["echo"] == "gateway"
        with pytest.raises(ConflictError):
            await w.unlisten()
    finally:
        listener.close()
