"""LogService.follow(): eager subscription, no loss/duplication around the history, idle waits."""

from __future__ import annotations

import asyncio

import pytest

from faasd.platform.core import Platform

pytestmark = pytest.mark.unit


async def test_follow_subscribes_before_first_read_and_skips_history_duplicates(platform: Platform) -> None:
    logs = platform.logs
    logs.append("fx", None, None, b"old\n", b"")
    sub = logs.follow("fx")  # subscribed now, not at the first read
    try:
        # a line stored between subscribing and querying the history is in both: delivered once
        logs.append("fx", None, None, b"between\n", b"")
        history = logs.query("fx")
        assert [e.text for e in history] == ["old", "between"]
        assert all(e.id is not None for e in history)
        sub.skip([e.id for e in history])
        logs.append("fx", None, "w1", b"", b"after\n")
        line = await sub.get(timeout=5)
        assert line is not None and (line.text, line.stream, line.instance) == ("after", "stderr", "w1")
        assert await sub.get(timeout=0.05) is None
    finally:
        sub.close()
    logs.append("fx", None, None, b"closed\n", b"")
    assert await sub.get(timeout=0.05) is None  # unsubscribed: nothing queued any more


async def test_follow_survives_idle_timeouts(platform: Platform) -> None:
    logs = platform.logs
    sub = logs.follow("fx")
    try:
        for _ in range(3):  # time-outs cancel nothing: the subscription keeps working
            assert await sub.get(timeout=0.02) is None
        logs.append("fx", None, None, b"late\n", b"")
        line = await sub.get(timeout=5)
        assert line is not None and line.text == "late"
    finally:
        await sub.aclose()


async def test_follow_gets_lines_appended_from_other_threads(platform: Platform) -> None:
    logs = platform.logs
    sub = logs.follow("fx")
    try:
        await asyncio.to_thread(logs.append, "fx", None, None, b"t1\nt2\n", b"")
        got = [await sub.get(timeout=5), await sub.get(timeout=5)]
        assert [e.text for e in got if e is not None] == ["t1", "t2"]
    finally:
        sub.close()
