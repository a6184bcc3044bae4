"""What an in-process handler prints (``faasd_results.FrameStream``, its ``sys.stdout``/``sys.stderr`` for one
request): text and bytes (``sys.stdout.buffer``) in the order written; and a request's streams are freed as
soon as it ends, without the cycle collector (they were a reference cycle with their ``buffer`` view: two
cycles per request, a young-generation collection every few hundred handed requests)."""

from __future__ import annotations

import gc
import threading
import weakref
from types import ModuleType

import pytest
from agent_modules import load_agent_module

from faasd.runtime.agent_client import InvokeRequest

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def results() -> ModuleType:
    return load_agent_module("faasd_results")


def test_a_stream_unused_as_bytes_is_freed_without_the_collector(results: ModuleType) -> None:
    sent: list[tuple[str, bytes]] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        stream = results.FrameStream(lambda kind, data: sent.append((kind, data)), "stdout", threading.Lock())
        stream.write("line\n")
        ref = weakref.ref(stream)
        del stream
        assert ref() is None, "a request's stream outlived it (a reference cycle waits for the collector)"
    finally:
        if enabled:
            gc.enable()
    assert sent == [("stdout", b"line\n")]


def test_bytes_through_buffer_and_text_keep_their_order(results: ModuleType) -> None:
    sent: list[tuple[str, bytes]] = []
    stream = results.FrameStream(lambda kind, data: sent.append((kind, data)), "stderr", threading.Lock())
    stream.write("a")
    assert stream.buffer is stream.buffer
    stream.buffer.write(b"\xffb\n")
    stream.write("c\n")
    stream.flush()
    assert sent == [("stderr", b"a\xffb\n"), ("stderr", b"c\n")]


async def test_a_handler_writing_bytes_to_stdout_buffer_is_captured(start_agent) -> None:
    code = """
import sys

def handle(e, c):
    print("text", end=" ")
    sys.stdout.buffer.write(b"bytes\\n")
    sys.stdout.flush()
    return "ok"
"""
    agent = await start_agent(code)
    result = await agent.client.invoke(InvokeRequest())
    assert result.error is None and result.body == b"ok"
    assert result.stdout == b"text bytes\n"
