"""The Python agent run as a plain host process: in-process and zygote (fork) modes, over its socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from faasd.errors import ResourceLimitError, RuntimeFailure
from faasd.runtime.agent_client import AgentClient, InvokeRequest, InvokeResult, StreamChunk

pytestmark = pytest.mark.unit

COUNTER = """
import os, random, sys
import faasd_runtime

STATE = {"n": 0}

def handle(event, context):
    STATE["n"] += 1
    print("call", STATE["n"], "env", os.environ.get("REQ_VAR"))
    print("to stderr", file=sys.stderr)
    return {"n": STATE["n"], "pid": os.getpid(), "req_var": os.environ.get("REQ_VAR"),
            "body": event.text, "path": event.path, "method": event.method,
            "header": event.headers.get("x-test"), "q": event.query_params, "fn": context.function_name,
            "rid": context.request_id}
"""


def _json(result: InvokeResult) -> dict:
    assert result.error is None, result.error
    assert result.status == 200
    return json.loads(result.body)


@pytest.mark.parametrize("fork", [False, True])
async def test_invoke_roundtrip(start_agent, fork: bool) -> None:
    agent = await start_agent(COUNTER, fork=fork)
    req = InvokeRequest(
        body=b"payload",
        method="PUT",
        path="/x",
        query="a=1&b=",
        headers={"X-Test": "yes"},
        env={"REQ_VAR": "v1"},
        request_id="rid-1",
    )
    result = await agent.client.invoke(req)
    data = _json(result)
    assert data["body"] == "payload"
    assert (data["path"], data["method"], data["header"]) == ("/x", "PUT", "yes")
    assert data["q"] == {"a": "1", "b": ""}
    assert (data["fn"], data["rid"], data["req_var"]) == ("unit-fn", "rid-1", "v1")
    assert result.stdout == b"call 1 env v1\n"
    assert result.stderr == b"to stderr\n"
    assert result.header("content-type") == "application/json"
    assert result.timings.run_ms is not None and result.timings.total_ms is not None
    if fork:
        assert result.exit_code == 0


async def test_inprocess_keeps_state_and_restores_env(start_agent) -> None:
    agent = await start_agent(COUNTER, env={"REQ_VAR": "from-process"})
    first = _json(await agent.client.invoke(InvokeRequest(env={"REQ_VAR": "per-request"})))
    second = _json(await agent.client.invoke(InvokeRequest()))
    assert (first["n"], second["n"]) == (1, 2)
    assert first["pid"] == second["pid"] == agent.proc.pid
    assert first["req_var"] == "per-request"
    assert second["req_var"] == "from-process"


async def test_fork_mode_does_not_leak_state(start_agent) -> None:
    agent = await start_agent(COUNTER, fork=True)
    results = [_json(await agent.client.invoke(InvokeRequest(env={"REQ_VAR": f"v{i}"}))) for i in range(3)]
    assert [r["n"] for r in results] == [1, 1, 1]
    assert len({r["pid"] for r in results}) == 3
    assert agent.proc.pid not in {r["pid"] for r in results}
    assert [r["req_var"] for r in results] == ["v0", "v1", "v2"]
    # a per-request choice overrides the agent's default
    inproc = [_json(await agent.client.invoke(InvokeRequest(), fork=False)) for _ in range(2)]
    assert [r["n"] for r in inproc] == [1, 2]


async def test_fork_mode_random_differs_per_request(start_agent) -> None:
    code = "import random\nrandom.seed(1)\ndef handle(e, c):\n    return random.random()\n"
    agent = await start_agent(code, fork=True)
    values = {(await agent.client.invoke(InvokeRequest())).body for _ in range(3)}
    assert len(values) == 3


@pytest.mark.parametrize("fork", [False, True])
async def test_exception_becomes_error_result_with_traceback(start_agent, fork: bool) -> None:
    code = """
def helper():
    raise KeyError("missing-thing")

def handle(event, context):
    print("before")
    helper()
"""
    agent = await start_agent(code, fork=fork)
    result = await agent.client.invoke(InvokeRequest())
    assert result.status == 500
    assert result.error is not None
    assert result.error.kind == "exception"
    assert result.error.exception == "KeyError"
    assert "missing-thing" in result.error.message
    assert "in helper" in result.error.traceback
    assert result.stdout == b"before\n"
    assert json.loads(result.body)["error"] == "function_exception"
    # the agent keeps serving
    assert (await agent.client.ping())["ready"] is True


async def test_sys_exit_in_handler_does_not_stop_inprocess_agent(start_agent) -> None:
    agent = await start_agent("import sys\ndef handle(e, c):\n    sys.exit(3)\n")
    result = await agent.client.invoke(InvokeRequest())
    assert result.error is not None and result.error.exception == "SystemExit"
    assert agent.proc.poll() is None


@pytest.mark.parametrize("fork", [False, True])
async def test_timeout_is_typed_and_agent_survives(start_agent, fork: bool) -> None:
    code = """
import time
def handle(event, context):
    if event.path == "/slow":
        print("starting", flush=True)
        try:
            time.sleep(60)
        except Exception:
            return "caught it"  # a timeout must not be swallowed by `except Exception`
    return "fast"
"""
    agent = await start_agent(code, fork=fork)
    with pytest.raises(ResourceLimitError) as info:
        await agent.client.invoke(InvokeRequest(path="/slow", timeout_s=0.3))
    assert info.value.details["limit"] == "timeout"
    assert info.value.details["worker_usable"] is True
    assert "starting" in info.value.details["stdout"]
    assert (await agent.client.invoke(InvokeRequest(timeout_s=5))).body == b"fast"


async def test_fork_mode_crash_is_reported(start_agent) -> None:
    code = "import os\ndef handle(e, c):\n    print('dying', flush=True)\n    os._exit(7)\n"
    agent = await start_agent(code, fork=True)
    result = await agent.client.invoke(InvokeRequest())
    assert result.error is not None and result.error.kind == "crash"
    assert result.exit_code == 7
    assert "exited with code 7" in result.error.message
    assert result.stdout == b"dying\n"
    assert agent.proc.poll() is None


async def test_fork_mode_captures_subprocess_output_and_kills_stragglers(start_agent, tmp_path: Path) -> None:
    marker = tmp_path / "straggler.pid"
    code = f"""
import subprocess
def handle(e, c):
    subprocess.run(["echo", "from a child process"])
    p = subprocess.Popen(["sleep", "60"])
    open({str(marker)!r}, "w").write(str(p.pid))
    return "ok"
"""
    agent = await start_agent(code, fork=True)
    result = await agent.client.invoke(InvokeRequest())
    assert result.body == b"ok"
    assert result.stdout == b"from a child process\n"
    pid = int(marker.read_text())
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # the agent is not PID 1 here; the zombie is reaped by its parent... which was killed
        await asyncio.sleep(0.01)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
    else:
        pytest.fail("background process of the request outlived it")


@pytest.mark.parametrize("fork", [False, True])
async def test_stream_frames_arrive_before_the_result(start_agent, tmp_path: Path, fork: bool) -> None:
    gate = tmp_path / "gate"
    code = f"""
import os, sys, time
def handle(event, context):
    print("first line", flush=True)
    sys.stderr.write("err line\\n")
    for _ in range(2000):
        if os.path.exists({str(gate)!r}):
            break
        time.sleep(0.005)
    else:
        return "gate never opened"
    print("second line")
    return "done"
"""
    agent = await start_agent(code, fork=fork)
    events: list[object] = []
    async for event in agent.client.invoke_stream(InvokeRequest(timeout_s=20)):
        events.append(event)
        if isinstance(event, StreamChunk) and event.data == b"first line\n":
            gate.touch()  # the handler only finishes after we saw its first output
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    final = events[-1]
    assert isinstance(final, InvokeResult)
    assert final.body == b"done"
    assert (chunks[0].stream, chunks[0].data) == ("stdout", b"first line\n")
    assert StreamChunk("stderr", b"err line\n") in chunks
    assert final.stdout == b"first line\nsecond line\n"


async def test_agent_killed_mid_request_is_a_runtime_failure(start_agent, tmp_path: Path) -> None:
    started = tmp_path / "started"
    code = f"""
import time
def handle(e, c):
    open({str(started)!r}, "w").close()
    time.sleep(60)
"""
    agent = await start_agent(code)

    async def kill_when_started() -> None:
        while not started.exists():
            await asyncio.sleep(0.005)
        os.kill(agent.proc.pid, signal.SIGKILL)

    killer = asyncio.create_task(kill_when_started())
    with pytest.raises(RuntimeFailure) as info:
        await agent.client.invoke(InvokeRequest(timeout_s=30))
    await killer
    assert "closed the connection before returning a result" in info.value.message
    assert info.value.details["worker_usable"] is False


async def test_async_handler(start_agent) -> None:
    code = """
import asyncio
import contextlib
LOOPS = set()
async def handle(event, context):
    await asyncio.sleep(0.001)
    LOOPS.add(id(asyncio.get_running_loop()))
    return {"loops": len(LOOPS)}
"""
    agent = await start_agent(code)
    await agent.client.invoke(InvokeRequest())
    result = await agent.client.invoke(InvokeRequest())
    assert json.loads(result.body) == {"loops": 1}  # one event loop reused across requests


async def test_import_error_is_reported_by_ping(start_agent) -> None:
    agent = await start_agent("import no_such_module_xyz\ndef handle(e, c):\n    return 1\n")
    pong = await agent.client.ping()
    assert pong["ready"] is False
    assert "no_such_module_xyz" in pong["error"]
    with pytest.raises(RuntimeFailure) as info:
        await agent.client.invoke(InvokeRequest())
    assert "not_ready" in info.value.message


async def test_missing_handler_attribute(start_agent) -> None:
    agent = await start_agent("def other(e, c):\n    return 1\n", handler="handler:handle")
    pong = await agent.client.ping()
    assert pong["ready"] is False and "has no attribute 'handle'" in pong["error"]


async def test_invalid_response(start_agent) -> None:
    agent = await start_agent("def handle(e, c):\n    return {'statusCode': 'abc'}\n")
    result = await agent.client.invoke(InvokeRequest())
    assert result.error is not None and result.error.kind == "invalid_response"
    assert result.status == 500


async def test_status_headers_and_binary_body(start_agent) -> None:
    code = """
def handle(e, c):
    headers = {"X-A": "1", "Set-Cookie": ["a=1", "b=2"]}
    return {"statusCode": 418, "headers": headers, "body": bytes(range(256))}
"""
    agent = await start_agent(code)
    result = await agent.client.invoke(InvokeRequest())
    assert result.status == 418
    assert result.body == bytes(range(256))
    assert ("Set-Cookie", "a=1") in result.headers and ("Set-Cookie", "b=2") in result.headers
    assert result.header("x-a") == "1"


async def test_large_bodies(start_agent) -> None:
    agent = await start_agent("def handle(e, c):\n    return e.body[::-1]\n", fork=True)
    body = os.urandom(3 * 1024 * 1024)
    result = await agent.client.invoke(InvokeRequest(body=body))
    assert result.body == body[::-1]


async def test_output_is_capped_but_flagged(start_agent) -> None:
    agent = await start_agent("def handle(e, c):\n    print('x' * 100000)\n    return 'ok'\n")
    agent.client.max_output_bytes = 1000
    result = await agent.client.invoke(InvokeRequest())
    assert len(result.stdout) == 1000
    assert result.output_truncated is True


async def test_restored_reseeds_random_and_runs_hooks(start_agent) -> None:
    code = """
import random
import faasd_runtime
random.seed(1234)
CALLS = []

@faasd_runtime.register_after_restore
def fix_up():
    CALLS.append("hook")

def bad_hook():
    raise RuntimeError("hook failed")

faasd_runtime.register_after_restore(bad_hook)

def handle(e, c):
    return {"r": random.random(), "calls": CALLS}
"""
    agent = await start_agent(code)
    ack = await agent.client.notify_restored()
    assert ack["hooks_run"] == 2
    assert len(ack["hook_errors"]) == 1 and "hook failed" in ack["hook_errors"][0]
    import random

    expected_without_reseed = random.Random(1234).random()
    data = json.loads((await agent.client.invoke(InvokeRequest())).body)
    assert data["calls"] == ["hook"]
    assert data["r"] != expected_without_reseed


async def test_user_module_named_agent_is_not_shadowed(start_agent) -> None:
    agent = await start_agent("def handle(e, c):\n    return 'user agent module'\n", filename="agent.py")
    assert (await agent.client.invoke(InvokeRequest())).body == b"user agent module"


async def test_requests_are_serialised(start_agent) -> None:
    code = """
import threading, time
ACTIVE = [0]
def handle(e, c):
    ACTIVE[0] += 1
    seen = ACTIVE[0]
    time.sleep(0.02)
    ACTIVE[0] -= 1
    return str(seen)
"""
    agent = await start_agent(code)
    results = await asyncio.gather(*(agent.client.invoke(InvokeRequest()) for _ in range(5)))
    assert [r.body for r in results] == [b"1"] * 5


async def test_traceback_shows_user_frames_and_causes(start_agent) -> None:
    code = """
def inner():
    raise ValueError("root cause")

def handle(e, c):
    try:
        inner()
    except ValueError as exc:
        raise RuntimeError("wrapped") from exc
"""
    agent = await start_agent(code)
    tb = (await agent.client.invoke(InvokeRequest())).error.traceback
    assert "agent.py" not in tb
    assert "in inner" in tb and "ValueError: root cause" in tb
    assert "direct cause" in tb and tb.rstrip().endswith("RuntimeError: wrapped")


async def test_fork_mode_kills_the_request_when_the_host_hangs_up(start_agent, tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    code = f"""
import os, time
def handle(e, c):
    open({str(marker)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
"""
    agent = await start_agent(code, fork=True)
    stream = agent.client.invoke_stream(InvokeRequest(timeout_s=120))
    task = asyncio.ensure_future(stream.__anext__())
    for _ in range(1000):
        if marker.exists() and marker.read_text():
            break
        await asyncio.sleep(0.01)
    pid = int(marker.read_text())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await task
    await stream.aclose()  # closes the connection: the host gave up
    for _ in range(500):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the request process kept running after the host hung up")
    # and the agent serves the next request right away
    assert (await agent.client.ping(timeout_s=5))["ready"] is True


async def test_client_handles_socket_paths_longer_than_sun_path(start_agent, tmp_path: Path) -> None:
    agent = await start_agent("def handle(e, c):\n    return 'far away'\n")
    long_dir = tmp_path / ("d" * 60) / ("e" * 60)
    long_dir.parent.mkdir()
    long_dir.symlink_to(agent.client.socket_path.parent)
    far = AgentClient(long_dir / "agent.sock")
    assert len(str(far.socket_path)) > 108
    assert (await far.invoke(InvokeRequest())).body == b"far away"


async def test_single_argument_handler(start_agent) -> None:
    agent = await start_agent("def handle(req):\n    return req.text.upper()\n")
    assert (await agent.client.invoke(InvokeRequest(body=b"classic"))).body == b"CLASSIC"
