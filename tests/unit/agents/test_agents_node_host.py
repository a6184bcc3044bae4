"""The Node agent run as a plain host process (skipped when node is not installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faasd.errors import ResourceLimitError, RuntimeFailure
from faasd.runtime.agent_client import InvokeRequest, InvokeResult, StreamChunk

pytestmark = pytest.mark.unit

HANDLER = """
let n = 0;
module.exports = async (event, context) => {
  n += 1;
  console.log('call', n, process.env.REQ_VAR);
  console.error('to stderr');
  return { n, body: event.text, path: event.path, method: event.method, header: event.headers['x-test'],
           reqVar: process.env.REQ_VAR || null, fn: context.functionName, rid: context.requestId };
};
"""


async def test_node_roundtrip_state_and_env(start_agent) -> None:
    agent = await start_agent(HANDLER, runtime="node")
    pong = await agent.client.ping()
    assert pong["runtime"] == "node" and pong["ready"] is True
    req = InvokeRequest(
        body=b"hi", method="PATCH", path="/p", headers={"X-Test": "t"}, env={"REQ_VAR": "v"}, request_id="r-1"
    )
    first = await agent.client.invoke(req)
    assert first.status == 200 and first.header("content-type") == "application/json"
    data = json.loads(first.body)
    assert data == {
        "n": 1,
        "body": "hi",
        "path": "/p",
        "method": "PATCH",
        "header": "t",
        "reqVar": "v",
        "fn": "unit-fn",
        "rid": "r-1",
    }
    assert first.stdout == b"call 1 v\n"
    assert first.stderr == b"to stderr\n"
    second = json.loads((await agent.client.invoke(InvokeRequest())).body)
    assert second["n"] == 2 and second["reqVar"] is None


async def test_node_handle_export_and_status_dict(start_agent) -> None:
    code = """
exports.handle = async (event) => ({
  statusCode: 201, headers: { 'X-A': ['1', '2'] }, body: Buffer.from([0, 255]),
});
"""
    agent = await start_agent(code, runtime="node")
    result = await agent.client.invoke(InvokeRequest())
    assert result.status == 201
    assert result.body == b"\x00\xff"
    assert [v for k, v in result.headers if k == "X-A"] == ["1", "2"]


async def test_node_exception_and_timeout(start_agent) -> None:
    code = """
module.exports = async (event) => {
  if (event.path === '/slow') { await new Promise((r) => setTimeout(r, 60000)); }
  if (event.path === '/boom') { throw new TypeError('bad thing'); }
  return 'ok';
};
"""
    agent = await start_agent(code, runtime="node")
    result = await agent.client.invoke(InvokeRequest(path="/boom"))
    assert result.status == 500 and result.error is not None
    assert result.error.exception == "TypeError" and "bad thing" in result.error.message
    assert "handler.js" in result.error.traceback
    with pytest.raises(ResourceLimitError) as info:
        await agent.client.invoke(InvokeRequest(path="/slow", timeout_s=0.2))
    assert info.value.details["worker_usable"] is True
    assert (await agent.client.invoke(InvokeRequest())).body == b"ok"


async def test_node_streaming(start_agent, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    code = f"""
const fs = require('fs');
module.exports = async () => {{
  console.log('first');
  for (let i = 0; i < 2000 && !fs.existsSync({json.dumps(str(gate))}); i++) {{
    await new Promise((r) => setTimeout(r, 5));
  }}
  return fs.existsSync({json.dumps(str(gate))}) ? 'done' : 'gate never opened';
}};
"""
    agent = await start_agent(code, runtime="node")
    events = []
    async for event in agent.client.invoke_stream(InvokeRequest(timeout_s=20)):
        events.append(event)
        if isinstance(event, StreamChunk):
            gate.touch()
    assert events[0] == StreamChunk("stdout", b"first\n")
    assert isinstance(events[-1], InvokeResult) and events[-1].body == b"done"


async def test_node_restored_hooks(start_agent) -> None:
    code = """
const rt = require('faasd_runtime');
let restored = 0;
rt.registerAfterRestore(() => { restored += 1; });
module.exports = async () => ({ restored, r: Math.random() });
"""
    agent = await start_agent(code, runtime="node")
    ack = await agent.client.notify_restored()
    assert ack["hooks_run"] == 1 and ack["hook_errors"] == []
    data = json.loads((await agent.client.invoke(InvokeRequest())).body)
    assert data["restored"] == 1 and 0 <= data["r"] < 1


async def test_node_load_error(start_agent) -> None:
    agent = await start_agent("module.exports = 42;", runtime="node")
    pong = await agent.client.ping()
    assert pong["ready"] is False and "no handler function" in pong["error"]
    with pytest.raises(RuntimeFailure):
        await agent.client.invoke(InvokeRequest())


async def test_node_esm_module(start_agent) -> None:
    code = "export default async (event) => ({ esm: true, body: event.text });\n"
    agent = await start_agent(code, runtime="node", filename="handler.mjs")
    result = await agent.client.invoke(InvokeRequest(body=b"m"))
    assert json.loads(result.body) == {"esm": True, "body": "m"}
