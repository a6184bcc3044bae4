"""The invoke path's conversions (faasd.platform.invocation): runtime result / limit → Outcome, Invocation →
the runtime's request; and a limit that ends a stream becomes its outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from platform_fakes import FakeFactory, FakeWorker

from faasd.errors import PidsExhaustedError, ResourceLimitError
from faasd.platform import Platform
from faasd.platform.executions import Outcome, StreamStart
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation, invoke_request
from faasd.runtime.agent_client import (
    FunctionError,
    InvokeEvent,
    InvokeRequest,
    InvokeResult,
    StreamChunk,
    Timings,
)


def test_outcome_of_result_keeps_the_answer_and_joins_repeated_headers() -> None:
    body = b"x" * 10
    r = InvokeResult(
        status=201,
        headers=[("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("Content-Type", "text/plain")],
        body=body,
        stdout=b"out",
        stderr=b"err",
        exit_code=0,
        timings=Timings(run_ms=None, total_ms=7.5),
    )
    o = Outcome.of_result(r, wall_ms=99.0)
    assert o.body is body  # passed by reference, not copied
    assert o.http_status == 201 and o.status == "succeeded" and o.run_ms == 7.5
    assert o.headers == {"set-cookie": "a=1, b=2", "content-type": "text/plain"}
    assert (o.stdout, o.stderr, o.exit_code, o.error, o.traceback) == (b"out", b"err", 0, None, None)


def test_outcome_of_a_function_error_is_failed_with_its_traceback() -> None:
    err = FunctionError(kind="exception", message="ValueError: boom", traceback="Traceback ...")
    o = Outcome.of_result(InvokeResult(status=500, headers=[], body=b"", error=err), wall_ms=3.0)
    assert o.status == "failed" and o.error == "ValueError: boom" and o.traceback == "Traceback ..."
    assert o.run_ms == 3.0  # nothing measured next to the function: the host's wall time


def test_outcome_of_limits() -> None:
    timeout = Outcome.of_limit(ResourceLimitError("too slow", limit="timeout"), wall_ms=1.0)
    assert (timeout.status, timeout.http_status, timeout.timed_out) == ("timeout", 504, True)
    assert timeout.error_code is None and timeout.error_details == {}
    memory = Outcome.of_limit(ResourceLimitError("too big", limit="memory", memory_mb=64), wall_ms=1.0)
    assert (memory.status, memory.http_status, memory.error_details) == ("failed", 500, {})
    pids = Outcome.of_limit(
        PidsExhaustedError("fork bomb", limit="pids", pids=32, detected_ms=4.5, stdout="x"), wall_ms=1.0
    )
    assert pids.error_code == "pids_exhausted" and pids.http_status == 500
    assert pids.error_details == {"limit": "pids", "pids": 32, "detected_ms": 4.5}


def test_invoke_request_passes_the_body_by_reference() -> None:
    body = b"payload"
    inv = Invocation(body=body, headers={"X-A": "1"}, path="/p", method="PUT", query="q=1")
    req = invoke_request(inv, headers={"x-a": "1"}, timeout_s=3.0, request_id="ex_1")
    assert req.body is body
    assert (req.method, req.path, req.query) == ("PUT", "/p", "q=1")
    assert (req.timeout_s, req.request_id) == (3.0, "ex_1")
    assert req.headers == {"x-a": "1"}


async def test_a_limit_that_ends_a_stream_is_its_outcome_and_record(
    platform: Platform, fake_factory: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def limited(self: FakeWorker, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        yield StreamChunk("stdout", b"before\n")
        raise PidsExhaustedError("the invocation hit its pids limit", limit="pids", pids=16, detected_ms=2.0)

    monkeypatch.setattr(FakeWorker, "invoke_stream", limited)
    await platform.deploy(FunctionSpec.model_validate({"name": "hello", "image": "faasd/python:latest"}))
    session = await platform.executions.open_stream("hello", Invocation(body=b"x"))
    events = [ev async for ev in session.events()]
    assert isinstance(events[0], StreamStart) and events[1] == StreamChunk("stdout", b"before\n")
    out = events[-1]
    assert isinstance(out, Outcome)
    assert out.status == "failed" and out.error_code == "pids_exhausted" and out.stdout == b"before\n"
    ex = platform.executions.get(session.execution_id)
    assert ex.status == "failed" and ex.http_status == 500 and ex.stdout == "before\n"
    assert ex.error == "the invocation hit its pids limit"
    await platform.close()


def test_execution_ids_have_the_agents_form_and_sort_by_creation() -> None:
    """Ids made later sort later (each journal row lands at the end of the primary-key index), and the
    gateway accepts the form (the agent makes ids for the requests it serves, in the same form)."""
    import time

    from faasd.platform.executions.records import new_execution_id
    from faasd.runtime.gateway_channel import EXECUTION_ID

    first = new_execution_id()
    time.sleep(0.002)
    later = [new_execution_id() for _ in range(3)]
    assert all(EXECUTION_ID.fullmatch(i) for i in [first, *later])
    assert all(first < i for i in later) and len(set(later)) == 3
