"""Python functions in real runc sandboxes: in-process and zygote workers, failures, streaming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import InvalidInputError, ResourceLimitError, RuntimeFailure
from faasd.runtime import Limits, SandboxManager
from faasd.runtime.agent_ready import ReadySignal
from faasd.runtime.workers import InvokeRequest, InvokeResult, StreamChunk, WorkerSpec, start_worker
from faasd.runtime.workers import worker as worker_module

pytestmark = pytest.mark.integration

HANDLER = """
import os
STATE = {"n": 0}

def handle(event, context):
    STATE["n"] += 1
    print("request", STATE["n"])
    return {"n": STATE["n"], "pid": os.getpid(), "uid": os.getuid(), "greeting": os.environ.get("GREETING"),
            "fixed": os.environ.get("FIXED"), "body": event.text, "fn": context.function_name}
"""


@pytest.fixture
def fn_layer(code_layer) -> Path:
    return code_layer({"function/handler.py": HANDLER})


def _spec(python_rootfs: Path, layer: Path, **kw: object) -> WorkerSpec:
    kw.setdefault("limits", Limits(memory_mb=128, timeout_s=None))
    return WorkerSpec(function="py-test", lowers=[python_rootfs, layer], **kw)  # type: ignore[arg-type]


async def test_python_inprocess_worker(workers, python_rootfs: Path, fn_layer: Path) -> None:
    w = await workers(_spec(python_rootfs, fn_layer, env={"FIXED": "yes"}))
    assert w.alive and w.init_ms is not None and w.init_ms > 0
    assert w.pong is not None and w.pong["runtime"] == "python" and w.pong["pid"] == 1
    first = await w.invoke(InvokeRequest(body=b"hello", env={"GREETING": "hi"}))
    second = await w.invoke(InvokeRequest(body=b"again"))
    d1, d2 = json.loads(first.body), json.loads(second.body)
    assert (d1["n"], d2["n"]) == (1, 2)  # in-process: module state is kept between requests
    assert d1["pid"] == d2["pid"] == 1
    assert d1["greeting"] == "hi" and d2["greeting"] is None  # per-request env does not leak
    assert d1["fixed"] == d2["fixed"] == "yes"  # worker env from the spec
    assert d1["body"] == "hello" and d1["fn"] == "py-test"
    assert first.stdout == b"request 1\n"
    assert first.timings.init_ms == w.init_ms and first.timings.run_ms is not None
    assert w.invocations == 2


async def test_the_python_agent_signals_when_it_listens(
    workers, python_rootfs: Path, fn_layer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[ReadySignal] = []
    unread: list[bytes] = []
    real = ReadySignal.create

    def create(io_dir: Path, owner: tuple[int, int] | None) -> ReadySignal:
        signal = real(io_dir, owner)
        close = signal.close

        def close_and_look() -> None:
            # the agent may write just after a pause ended on its own and the next ping succeeded: then
            # the byte is still in the FIFO, unread (what the host does with it is timing; that the agent
            # wrote it is not)
            fd = os.open(signal.path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                with contextlib.suppress(BlockingIOError):
                    unread.append(os.read(fd, 64))
            finally:
                os.close(fd)
            close()

        signal.close = close_and_look  # type: ignore[method-assign]
        made.append(signal)
        return signal

    monkeypatch.setattr(worker_module.ReadySignal, "create", staticmethod(create))
    w = await workers(_spec(python_rootfs, fn_layer))
    assert len(made) == 1
    assert made[0].fired or b"".join(unread)  # the agent wrote to the FIFO once it listened
    assert not made[0].path.exists()  # removed once the worker started
    assert json.loads((await w.invoke(InvokeRequest(body=b"x"))).body)["n"] == 1


async def test_python_zygote_worker_isolates_requests(workers, python_rootfs: Path, fn_layer: Path) -> None:
    w = await workers(_spec(python_rootfs, fn_layer, fork_per_request=True))
    results = [json.loads((await w.invoke(InvokeRequest(env={"GREETING": f"g{i}"}))).body) for i in range(3)]
    assert [r["n"] for r in results] == [1, 1, 1]  # no state leaks from one request to the next
    assert len({r["pid"] for r in results}) == 3 and 1 not in {r["pid"] for r in results}
    assert [r["greeting"] for r in results] == ["g0", "g1", "g2"]


async def test_python_worker_as_unprivileged_user(workers, python_rootfs: Path, fn_layer: Path) -> None:
    w = await workers(_spec(python_rootfs, fn_layer, user="65534:65534"))
    data = json.loads((await w.invoke(InvokeRequest())).body)
    assert data["uid"] == 65534


@pytest.mark.parametrize("fork", [False, True])
async def test_python_exception_gives_traceback(workers, python_rootfs: Path, code_layer, fork: bool) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        def handle(event, context):
            return 1 / 0
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer, fork_per_request=fork))
    result = await w.invoke(InvokeRequest())
    assert result.status == 500 and result.error is not None
    assert result.error.exception == "ZeroDivisionError"
    assert "/function/handler.py" in result.error.traceback and "1 / 0" in result.error.traceback
    assert w.alive


@pytest.mark.parametrize("fork", [False, True])
async def test_python_timeout_keeps_worker_usable(
    workers, python_rootfs: Path, code_layer, fork: bool
) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        import time
        def handle(event, context):
            if event.path == "/slow":
                time.sleep(30)
            return "quick"
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer, fork_per_request=fork))
    with pytest.raises(ResourceLimitError) as info:
        await w.invoke(InvokeRequest(path="/slow", timeout_s=0.5))
    assert info.value.details["limit"] == "timeout" and info.value.details["worker_usable"] is True
    assert w.alive
    assert (await w.invoke(InvokeRequest())).body == b"quick"


async def test_python_hung_agent_is_recycled(
    manager: SandboxManager, settings: Settings, leaks, python_rootfs: Path, code_layer
) -> None:
    # A handler that disables the agent's timeout signal: only the host's hard deadline can stop it.
    layer = code_layer(
        {
            "function/handler.py": """
        import signal
        def handle(event, context):
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            while True:
                pass
    """
        }
    )
    w = await start_worker(manager, _spec(python_rootfs, layer))
    try:
        with pytest.raises(ResourceLimitError) as info:
            await w.invoke(InvokeRequest(timeout_s=0.3))
        assert info.value.details["worker_usable"] is False
        assert not w.alive
        assert leaks(w.id) == []  # the dead worker was destroyed at once
        with pytest.raises(Exception, match="closed"):
            await w.invoke(InvokeRequest())
    finally:
        await w.close()


async def test_python_agent_killed_mid_request(
    manager: SandboxManager, settings: Settings, leaks, python_rootfs: Path, code_layer
) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        import time
        def handle(event, context):
            open("/run/faasd-io/started", "w").close()
            time.sleep(30)
    """
        }
    )
    w = await start_worker(manager, _spec(python_rootfs, layer))
    try:

        async def kill_when_started() -> None:
            while not (w.sandbox.io_dir / "started").exists():
                await asyncio.sleep(0.01)
            await w.sandbox.kill()

        killer = asyncio.create_task(kill_when_started())
        with pytest.raises(RuntimeFailure) as info:
            await w.invoke(InvokeRequest(timeout_s=20))
        await killer
        assert "before returning a result" in info.value.message
        assert not w.alive
        assert leaks(w.id) == []
    finally:
        await w.close()


async def test_python_out_of_memory_is_a_resource_limit(
    manager: SandboxManager, python_rootfs: Path, code_layer
) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        def handle(event, context):
            hog = []
            while True:
                hog.append(bytearray(8 * 1024 * 1024))
    """
        }
    )
    w = await start_worker(manager, _spec(python_rootfs, layer, limits=Limits(memory_mb=64, timeout_s=None)))
    try:
        with pytest.raises(ResourceLimitError) as info:
            await w.invoke(InvokeRequest(timeout_s=30))
        assert info.value.details["limit"] == "memory"
        assert not w.alive
    finally:
        await w.close()


async def test_python_zygote_child_oom_leaves_worker_alive(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        def handle(event, context):
            if event.path == "/hog":
                hog = []
                while True:
                    hog.append(bytearray(8 * 1024 * 1024))
            return "fine"
    """
        }
    )
    w = await workers(
        _spec(python_rootfs, layer, fork_per_request=True, limits=Limits(memory_mb=96, timeout_s=None))
    )
    result = await w.invoke(InvokeRequest(path="/hog", timeout_s=30))
    assert result.error is not None and result.error.kind == "crash"
    assert "SIGKILL" in result.error.message
    assert w.alive
    assert (await w.invoke(InvokeRequest())).body == b"fine"


@pytest.mark.parametrize("fork", [False, True])
async def test_python_streaming_frames_arrive_before_the_end(
    workers, python_rootfs: Path, code_layer, fork: bool
) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        import os, time
        def handle(event, context):
            print("working...", flush=True)
            for _ in range(2000):
                if os.path.exists("/run/faasd-io/gate"):
                    return "finished"
                time.sleep(0.005)
            return "gate never opened"
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer, fork_per_request=fork))
    events: list[object] = []
    async for event in w.invoke_stream(InvokeRequest(timeout_s=30)):
        events.append(event)
        if isinstance(event, StreamChunk):
            (w.sandbox.io_dir / "gate").touch()  # the handler can only finish after we saw its output
    assert events[0] == StreamChunk("stdout", b"working...\n")
    assert isinstance(events[-1], InvokeResult) and events[-1].body == b"finished"


async def test_python_import_error_fails_start_cleanly(
    manager: SandboxManager, settings: Settings, leaks, python_rootfs: Path, code_layer
) -> None:
    layer = code_layer({"function/handler.py": "import definitely_not_installed\n"})
    spec = _spec(python_rootfs, layer, sandbox_id="fd-agents-importerr-" + settings.run_dir.parent.name[-8:])
    with pytest.raises(InvalidInputError) as info:
        await start_worker(manager, spec)
    assert "definitely_not_installed" in info.value.message
    assert leaks(spec.sandbox_id or "") == []


async def test_python_missing_interpreter_fails_start_cleanly(
    manager: SandboxManager, settings: Settings, code_layer, static_binaries
) -> None:
    image = code_layer({"bin/hello": static_binaries["c"].read_bytes()}, mode=0o755)
    layer = code_layer({"function/handler.py": HANDLER})
    spec = WorkerSpec(
        function="no-python",
        lowers=[image, layer],
        ready_timeout_s=10,
        limits=Limits(memory_mb=64, timeout_s=None),
    )
    with pytest.raises(InvalidInputError, match="need an image with python3"):
        await start_worker(manager, spec)
    assert not manager._sandboxes


async def test_python_restored_notification(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        import random
        import faasd_runtime
        random.seed(7)
        HOOKS = []
        faasd_runtime.register_after_restore(lambda: HOOKS.append(1))
        def handle(event, context):
            return {"hooks": len(HOOKS), "r": random.random()}
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer))
    ack = await w.notify_restored()
    assert ack["hooks_run"] == 1 and ack["hook_errors"] == []
    import random

    data = json.loads((await w.invoke(InvokeRequest())).body)
    assert data["hooks"] == 1
    assert data["r"] != random.Random(7).random()  # reseeded from the kernel


async def test_python_async_handler_and_status_dict(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/main.py": """
        import asyncio
        async def run(event, context):
            await asyncio.sleep(0.01)
            return {"statusCode": 202, "headers": {"X-Fn": "async"}, "body": {"ok": True}}
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer, handler="main:run"))
    result = await w.invoke(InvokeRequest())
    assert result.status == 202 and result.header("x-fn") == "async"
    assert json.loads(result.body) == {"ok": True}


async def test_python_concurrent_invokes_are_serialised(workers, python_rootfs: Path, fn_layer: Path) -> None:
    w = await workers(_spec(python_rootfs, fn_layer))
    results = await asyncio.gather(*(w.invoke(InvokeRequest(body=str(i).encode())) for i in range(8)))
    assert sorted(json.loads(r.body)["n"] for r in results) == list(range(1, 9))


async def test_agent_code_is_read_only_for_the_function(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        def handle(event, context):
            try:
                with open("/faasd/agent/python/agent.py", "a") as fh:
                    fh.write("# tampered")
            except OSError as exc:
                return {"errno": exc.errno}
            return {"errno": None}
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer))
    assert json.loads((await w.invoke(InvokeRequest())).body) == {"errno": 30}  # EROFS


async def test_abandoned_stream_frees_the_worker(workers, python_rootfs: Path, code_layer) -> None:
    layer = code_layer(
        {
            "function/handler.py": """
        import time
        def handle(event, context):
            if event.path == "/long":
                print("started", flush=True)
                time.sleep(30)
            return "next"
    """
        }
    )
    w = await workers(_spec(python_rootfs, layer, fork_per_request=True))
    async with contextlib.aclosing(w.invoke_stream(InvokeRequest(path="/long", timeout_s=60))) as events:
        async for event in events:
            assert event == StreamChunk("stdout", b"started\n")
            break  # the caller went away (e.g. its HTTP client disconnected)
    result = await asyncio.wait_for(w.invoke(InvokeRequest(timeout_s=10)), 10)
    assert result.body == b"next" and w.alive
