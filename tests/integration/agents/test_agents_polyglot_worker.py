"""Node, exec-mode (static C / Rust binaries in an otherwise empty image) and http-mode workers in runc."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from faasd.errors import InvalidInputError, ResourceLimitError
from faasd.runtime import Limits, SandboxManager
from faasd.runtime.workers import InvokeRequest, InvokeResult, StreamChunk, WorkerSpec, start_worker

pytestmark = pytest.mark.integration

LIMITS = Limits(memory_mb=128, timeout_s=None)


# ------------------------------------------------------------------------------------------ node
async def test_node_function(workers, node_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.js": """
        let n = 0;
        module.exports = async (event, context) => {
          n += 1;
          console.log('node request', n);
          if (event.path === '/boom') throw new RangeError('out of range');
          return { n, pid: process.pid, node: process.version, body: event.text,
                   greeting: process.env.GREETING || null, fn: context.functionName };
        };
    """
        }
    )
    w = await workers(
        WorkerSpec(function="node-test", mode="node", lowers=[node_rootfs, layer], limits=LIMITS)
    )
    assert w.pong is not None and w.pong["runtime"] == "node"
    first = await w.invoke(InvokeRequest(body=b"js", env={"GREETING": "hej"}))
    second = await w.invoke(InvokeRequest())
    d1, d2 = json.loads(first.body), json.loads(second.body)
    assert (d1["n"], d2["n"]) == (1, 2) and d1["pid"] == d2["pid"] != 1  # faasd-init is PID 1
    assert d1["node"].startswith("v18.")  # Debian bookworm's nodejs
    assert d1["body"] == "js" and d1["greeting"] == "hej" and d2["greeting"] is None
    assert d1["fn"] == "node-test"
    assert first.stdout == b"node request 1\n"
    err = await w.invoke(InvokeRequest(path="/boom"))
    assert err.status == 500 and err.error is not None and err.error.exception == "RangeError"
    assert "/function/handler.js" in err.error.traceback


async def test_node_worker_reaps_orphans(workers, node_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.js": """
        const { execSync } = require('child_process');
        const fs = require('fs');
        module.exports = async (event) => {
          if (event.path === '/spawn') { execSync('sh -c "sleep 0.05 &"'); return 'spawned'; }
          const zombies = fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).filter((p) => {
            try {
              return fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1][0] === 'Z';
            } catch (e) { return false; }
          });
          return { zombies: zombies.length };
        };
    """
        }
    )
    w = await workers(
        WorkerSpec(function="node-reap", mode="node", lowers=[node_rootfs, layer], limits=LIMITS)
    )
    for _ in range(5):
        assert (await w.invoke(InvokeRequest(path="/spawn"))).body == b"spawned"
    await asyncio.sleep(0.3)  # the orphaned sleeps end and are re-parented to PID 1
    assert json.loads((await w.invoke(InvokeRequest(path="/count"))).body) == {"zombies": 0}


async def test_node_streaming_and_timeout(workers, node_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.js": """
        const fs = require('fs');
        exports.handle = async (event) => {
          if (event.path === '/slow') { await new Promise((r) => setTimeout(r, 30000)); }
          console.log('tick');
          for (let i = 0; i < 2000 && !fs.existsSync('/run/faasd-io/gate'); i++) {
            await new Promise((r) => setTimeout(r, 5));
          }
          return 'streamed';
        };
    """
        }
    )
    w = await workers(
        WorkerSpec(function="node-stream", mode="node", lowers=[node_rootfs, layer], limits=LIMITS)
    )
    events: list[object] = []
    async for event in w.invoke_stream(InvokeRequest(timeout_s=30)):
        events.append(event)
        if isinstance(event, StreamChunk):
            (w.sandbox.io_dir / "gate").touch()
    assert events[0] == StreamChunk("stdout", b"tick\n")
    assert isinstance(events[-1], InvokeResult) and events[-1].body == b"streamed"
    with pytest.raises(ResourceLimitError):
        await w.invoke(InvokeRequest(path="/slow", timeout_s=0.3))
    assert w.alive


# ------------------------------------------------------------------------------------------ exec
@pytest.fixture
def static_image(code_layer, static_binaries: dict[str, Path]) -> Path:
    """An image containing nothing but static binaries: no libc, no shell, no python."""
    files: dict[str, str | bytes] = {f"bin/hello-{k}": p.read_bytes() for k, p in static_binaries.items()}
    return code_layer(files, mode=0o755)


async def test_exec_static_c_binary(workers, static_image: Path) -> None:
    w = await workers(
        WorkerSpec(
            function="c-hello",
            mode="exec",
            lowers=[static_image],
            command=["/bin/hello-c"],
            env={"GREETING": "static"},
            limits=LIMITS,
        )
    )
    result = await w.invoke(InvokeRequest(body=b"hello from stdin", method="PUT"))
    assert result.status == 200 and result.error is None
    assert result.body == b"static|PUT|HELLO FROM STDIN"
    assert result.stderr == b"done\n" and result.exit_code == 0
    again = await w.invoke(InvokeRequest(body=b"x", env={"GREETING": "per-request"}))
    assert again.body == b"per-request|POST|X"


async def test_exec_failures_and_timeout(workers, static_image: Path) -> None:
    fail = await workers(
        WorkerSpec(
            function="c-fail",
            mode="exec",
            lowers=[static_image],
            command=["/bin/hello-c", "fail"],
            limits=LIMITS,
        )
    )
    result = await fail.invoke(InvokeRequest())
    assert result.status == 500 and result.exit_code == 3
    assert result.error is not None and result.error.kind == "exit_code"
    assert "something went wrong" in result.error.traceback
    slow = await workers(
        WorkerSpec(
            function="c-slow",
            mode="exec",
            lowers=[static_image],
            command=["/bin/hello-c", "sleep"],
            limits=LIMITS,
        )
    )
    with pytest.raises(ResourceLimitError) as info:
        await slow.invoke(InvokeRequest(timeout_s=0.5))
    assert info.value.details["worker_usable"] is True
    assert slow.alive


async def test_exec_runs_requests_as_the_sandbox_user(workers, static_image: Path) -> None:
    w = await workers(
        WorkerSpec(
            function="c-uid",
            mode="exec",
            lowers=[static_image],
            command=["/bin/hello-c", "uid"],
            user="1234:5678",
            limits=LIMITS,
        )
    )
    assert (await w.invoke(InvokeRequest())).body == b"1234:5678"


async def test_exec_missing_command_is_invalid_input(workers, static_image: Path) -> None:
    w = await workers(
        WorkerSpec(
            function="c-missing",
            mode="exec",
            lowers=[static_image],
            command=["/bin/not-there"],
            limits=LIMITS,
        )
    )
    with pytest.raises(InvalidInputError, match="cannot be run in its image"):
        await w.invoke(InvokeRequest())


async def test_exec_static_rust_binary(workers, static_image: Path, static_binaries: dict[str, Path]) -> None:
    if "rust" not in static_binaries:
        pytest.skip("rustc cannot build a static binary here")
    w = await workers(
        WorkerSpec(
            function="rs-hello",
            mode="exec",
            lowers=[static_image],
            command=["/bin/hello-rust"],
            env={"GREETING": "ferris"},
            limits=LIMITS,
        )
    )
    result = await w.invoke(InvokeRequest(body=b"abc"))
    assert result.body == b"rust:ferris:cba"


# ------------------------------------------------------------------------------------------ http
HTTP_APP = """
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status, payload, headers=()):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            return self._reply(200, {"ok": True})
        self._reply(200, {"method": "GET", "path": self.path, "x": self.headers.get("X-Test")})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n)
        self._reply(201, {"method": "POST", "path": self.path, "len": len(data), "echo": data.decode()},
                    headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
"""


async def test_http_mode_python_server(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer({"app/server.py": HTTP_APP})
    w = await workers(
        WorkerSpec(
            function="http-app",
            mode="http",
            lowers=[python_rootfs, layer],
            command=["python3", "/app/server.py"],
            port=9090,
            env={"PORT": "9090"},
            readiness_path="/healthz",
            limits=LIMITS,
        )
    )
    got = await w.invoke(InvokeRequest(method="GET", path="/items", query="a=1", headers={"X-Test": "t"}))
    assert got.status == 200
    assert json.loads(got.body) == {"method": "GET", "path": "/items?a=1", "x": "t"}
    body = b"x" * 100_000
    posted = await w.invoke(InvokeRequest(method="POST", path="/submit", body=body))
    assert posted.status == 201
    assert json.loads(posted.body)["len"] == len(body)
    assert [v for k, v in posted.headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]
    for _ in range(5):  # no keep-alive: each request gets its own connection
        assert (await w.invoke(InvokeRequest(method="GET", path="/"))).status == 200


async def test_http_mode_server_that_exits_fails_start(
    manager: SandboxManager, python_rootfs: Path, code_layer
) -> None:
    layer = code_layer({"app/server.py": "import sys\nprint('bad config', file=sys.stderr)\nsys.exit(2)\n"})
    spec = WorkerSpec(
        function="http-bad",
        mode="http",
        lowers=[python_rootfs, layer],
        command=["python3", "/app/server.py"],
        limits=LIMITS,
    )
    with pytest.raises(InvalidInputError, match="bad config"):
        await start_worker(manager, spec)
    assert not manager._sandboxes


SSE_APP = """
import os, time
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        def chunk(data):
            self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data))
            self.wfile.flush()
        chunk(b"data: first\\n\\n")
        for _ in range(2000):
            if os.path.exists("/run/faasd-io/gate"):
                break
            time.sleep(0.005)
        chunk(b"data: second\\n\\n")
        self.wfile.write(b"0\\r\\n\\r\\n")

    def log_message(self, *args):
        pass

HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


async def test_http_mode_streams_the_body(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer({"app/sse.py": SSE_APP})
    w = await workers(
        WorkerSpec(
            function="http-sse",
            mode="http",
            lowers=[python_rootfs, layer],
            command=["python3", "/app/sse.py"],
            limits=LIMITS,
        )
    )
    events: list[object] = []
    async for event in w.invoke_stream(InvokeRequest(method="GET", path="/events", timeout_s=30)):
        events.append(event)
        if isinstance(event, StreamChunk):
            (w.sandbox.io_dir / "gate").touch()  # the server sends more only after we saw the first event
    assert events[0] == StreamChunk("body", b"data: first\n\n")
    final = events[-1]
    assert isinstance(final, InvokeResult)
    assert final.body == b"data: first\n\ndata: second\n\n"
    assert final.header("content-type") == "text/event-stream"
    assert final.header("transfer-encoding") is None  # hop-by-hop headers are not passed on
