"""The platform on real runc sandboxes: deploy → invoke (sync/async/stream) → scale → logs → delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from platform_real_helpers import runc_containers

from faasd.errors import CapacityError
from faasd.platform.core import Platform
from faasd.platform.errors import InvocationTimeoutError
from faasd.platform.exec_ephemeral import ExecuteRequest
from faasd.platform.executions import Outcome, StreamStart
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation, StreamChunk

pytestmark = pytest.mark.integration


async def test_python_function_lifecycle(real_platform: Platform, unique_id: str) -> None:
    p = real_platform
    p.secrets.create("api-token", b"tok-123")
    await p.deploy(
        FunctionSpec(
            name=unique_id,
            image=f"{unique_id}:1",
            env={"GREETING": "hi"},
            secrets=["api-token"],
            scale={"min": 0, "max": 2},
        )
    )  # type: ignore[arg-type]
    first = await p.executions.invoke(unique_id, Invocation(body=b"one"))
    assert first.status == "succeeded" and first.cold
    assert first.body == b'{"echo": "one", "secret": "tok-123", "env": "hi"}'
    second = await p.executions.invoke(unique_id, Invocation(body=b"two"))
    assert not second.cold and b'"two"' in second.body

    # handler exception: failed execution with the traceback, worker still usable
    bad = await p.executions.invoke(unique_id, Invocation(body=b"boom"))
    assert bad.status == "failed" and "boom requested" in (bad.error or "")

    # streaming
    session = await p.executions.open_stream(unique_id, Invocation(body=b"streamed"))
    events = [ev async for ev in session.events()]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], Outcome)
    chunks = b"".join(e.data for e in events if isinstance(e, StreamChunk))
    assert b"got streamed" in chunks or b"got streamed" in events[-1].stdout
    assert b'"streamed"' in events[-1].body

    # async: persisted, drained by the loop
    ex = p.executions.submit(unique_id, Invocation(body=b"later"))
    await p.executions.wait_idle(60)
    row = p.executions.get(ex.id)
    assert row.status == "succeeded" and row.result_body is not None and b'"later"' in row.result_body

    # logs were stored per function
    texts = [ln.text for ln in p.logs.query(unique_id, tail=50)]
    assert "got one" in texts and "to stderr" in texts

    # scale: pin to 2 workers, then to zero
    fn = await p.scale(unique_id, replicas=2)
    assert p.runner.status(fn)["replicas"] == 2
    assert len([c for c in runc_containers(p.settings) if c.startswith("fd-")]) == 2
    fn = await p.scale(unique_id, replicas=0)
    assert p.runner.status(fn)["replicas"] == 0 and runc_containers(p.settings) == []

    await p.delete(unique_id)
    assert runc_containers(p.settings) == []


async def test_timeout_replaces_worker(real_platform: Platform, unique_id: str) -> None:
    p = real_platform
    await p.deploy(FunctionSpec(name=unique_id, image=f"{unique_id}:1", limits={"timeout_s": 1.0}))  # type: ignore[arg-type]
    with pytest.raises(InvocationTimeoutError):
        await p.executions.invoke(unique_id, Invocation(body=b"sleep"))
    ok = await p.executions.invoke(unique_id, Invocation(body=b"after"))
    assert ok.status == "succeeded" and ok.cold  # the timed-out worker was thrown away


async def test_saturation_and_ephemeral(real_platform: Platform, unique_id: str) -> None:
    import asyncio

    p = real_platform
    await p.deploy(
        FunctionSpec(
            name=unique_id,
            image=f"{unique_id}:1",
            scale={"min": 0, "max": 1},
            queue_size=0,
            limits={"timeout_s": 5.0},
        )
    )  # type: ignore[arg-type]
    slow = asyncio.create_task(p.executions.invoke(unique_id, Invocation(body=b"sleep")))
    while p.runner.status(p.functions.get(unique_id))["busy"] < 1:
        await asyncio.sleep(0.02)
    with pytest.raises(CapacityError):
        await p.executions.invoke(unique_id, Invocation(body=b"x"))
    with pytest.raises(InvocationTimeoutError):
        await slow

    eph = unique_id + "-e"
    await p.deploy(FunctionSpec(name=eph, image=f"{unique_id}:1", mode="ephemeral"))
    for body in (b"a", b"b"):
        out = await p.executions.invoke(eph, Invocation(body=body))
        assert out.status == "succeeded" and out.cold
    await p.runner.settled(eph)  # the answers did not wait for the teardowns; they are done now
    # what is left is the next invocation's spare sandbox (created, not started; faasd.platform.spares)
    assert len([c for c in runc_containers(p.settings) if eph in c]) <= 1
    await p.delete(eph)
    assert [c for c in runc_containers(p.settings) if eph in c] == []


async def test_one_off_execute(real_platform: Platform) -> None:
    assert real_platform.execute is not None
    py = await real_platform.execute.execute(
        ExecuteRequest(code="import sys; print(6*7); sys.exit(3)", language="python")
    )
    assert py["exit_code"] == 3 and py["stdout"] == "42\n" and py["request_id"].startswith("rq_")
    sh = await real_platform.execute.execute(
        ExecuteRequest(command="echo $A; pwd; echo err >&2", env_vars={"A": "b"}, working_dir="/tmp")
    )
    assert sh["exit_code"] == 0 and sh["stdout"] == "b\n/tmp\n" and sh["stderr"] == "err\n"
    slow = await real_platform.execute.execute(ExecuteRequest(command=["sleep", "10"], timeout_ms=500))
    assert slow["timed_out"] is True


async def test_exec_runtime_function(real_platform: Platform, unique_id: str) -> None:
    p = real_platform
    await p.deploy(
        FunctionSpec(
            name=unique_id,
            image=f"{unique_id}:1",
            runtime="exec",
            command=[
                "/bin/sh",
                "-c",
                'read x; [ "$x" = fail ] && { echo bad >&2; exit 4; }; echo "$x" | tr a-z A-Z',
            ],
        )
    )
    ok = await p.executions.invoke(unique_id, Invocation(body=b"abc\n"))
    assert ok.status == "succeeded" and ok.body == b"ABC\n"
    bad = await p.executions.invoke(unique_id, Invocation(body=b"fail\n"))
    assert bad.status == "failed" and bad.exit_code == 4 and b"bad" in bad.stderr


async def test_node_function(real_platform: Platform, unique_id: str, tmp_path: Path) -> None:
    from faasd.baseimages import ensure_base_images

    store = real_platform.images
    assert store is not None
    ensure_base_images(store, ["node"], settings=real_platform.settings)  # type: ignore[arg-type]
    src = tmp_path / "node-src"
    src.mkdir()
    (src / "handler.js").write_text(
        "module.exports = async (event) => { console.log('node got', event.body.toString()); "
        "return { echo: event.body.toString(), runtime: 'node' }; };\n"
    )
    store.add_layer("faasd/node:latest", src, ref=f"{unique_id}-node:1")  # type: ignore[attr-defined]
    await real_platform.deploy(FunctionSpec(name=unique_id, image=f"{unique_id}-node:1", runtime="node"))
    out = await real_platform.executions.invoke(unique_id, Invocation(body=b"js"))
    assert out.status == "succeeded", out.error
    assert json.loads(out.body) == {"echo": "js", "runtime": "node"}
    assert "node got js" in [ln.text for ln in real_platform.logs.query(unique_id, tail=5)]


HTTP_SERVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        out = (self.path + '|' + self.headers.get('x-trace', '') + '|' + body.decode()).encode()
        self.send_response(201)
        self.send_header('Content-Type', 'text/x-test')
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
"""


async def test_http_runtime_passes_the_servers_response_through(
    real_platform: Platform, unique_id: str
) -> None:
    await real_platform.deploy(
        FunctionSpec(
            name=unique_id, image=f"{unique_id}:1", runtime="http", command=["python3", "-c", HTTP_SERVER]
        )
    )
    out = await real_platform.executions.invoke(
        unique_id, Invocation(body=b"payload", path="/sub/path", query="a=1", headers={"X-Trace": "t1"})
    )
    assert out.status == "succeeded" and out.http_status == 201
    assert out.headers["content-type"] == "text/x-test"
    assert out.body == b"/sub/path?a=1|t1|payload"
