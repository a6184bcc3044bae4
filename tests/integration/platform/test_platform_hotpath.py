"""The warm sync invoke path on real sandboxes: buffered execution records stay correct and are flushed.

Sync/stream execution rows go through a write-behind journal (``ExecutionJournal``); these tests check on a
real platform (runc workers, SQLite file) that every record and the invocation count are right when read
through the API's services, and that shutdown writes everything to the database file.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation

pytestmark = pytest.mark.integration


def _raw(p: Platform, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Read the database file without a session (so without flushing the journal)."""
    path = p.db.engine.url.database
    assert path
    with sqlite3.connect(path) as conn:
        return list(conn.execute(sql, args))


async def test_concurrent_warm_invocations_are_all_recorded(real_platform: Platform, unique_id: str) -> None:
    p = real_platform
    await p.deploy(
        FunctionSpec(name=unique_id, image=f"{unique_id}:1", scale={"min": 1, "max": 2}, queue_size=100)  # type: ignore[arg-type]
    )
    first = await p.executions.invoke(unique_id, Invocation(body=b"warm-up"))
    assert first.status == "succeeded"
    outs = await asyncio.gather(
        *(p.executions.invoke(unique_id, Invocation(body=f"r{i}".encode())) for i in range(30))
    )
    assert {o.status for o in outs} == {"succeeded"}
    assert all(f'"r{i}"'.encode() in o.body for i, o in enumerate(outs))
    # reads through the services see every record, whether the journal wrote it yet or not
    for o in outs:
        ex = p.executions.get(o.execution_id)
        assert ex.status == "succeeded" and ex.kind == "sync" and ex.http_status == 200
        assert ex.finished_at is not None and ex.run_ms is not None and ex.cold_start is not None
    assert p.functions.get(unique_id).invocation_count == 31
    listed = p.executions.list(unique_id, limit=100)
    assert {o.execution_id for o in outs} <= {e.id for e in listed}
    # the handler's output is stored as log lines of its execution
    assert any(ln.text == "got r0" for ln in p.logs.for_execution(outs[0].execution_id))


async def test_shutdown_writes_buffered_records_to_the_database(
    real_platform: Platform, unique_id: str
) -> None:
    p = real_platform
    p.executions.journal.delay_s = 3600.0  # nothing is written by the timer during this test
    await p.deploy(FunctionSpec(name=unique_id, image=f"{unique_id}:1", scale={"min": 0, "max": 1}))  # type: ignore[arg-type]
    outs = [await p.executions.invoke(unique_id, Invocation(body=b"x")) for _ in range(3)]
    ids = {o.execution_id for o in outs}
    await p.close()
    assert p.executions.journal.pending == 0
    rows = dict(_raw(p, "SELECT id, status FROM executions WHERE function = ?", unique_id))  # type: ignore[arg-type]
    assert ids <= set(rows) and {rows[i] for i in ids} == {"succeeded"}
    assert _raw(p, "SELECT invocation_count FROM functions WHERE name = ?", unique_id) == [(3,)]


async def test_warm_worker_reads_its_oom_counter_through_one_descriptor_closed_with_it(
    real_platform: Platform, unique_id: str
) -> None:
    import os

    from faasd.runtime import cgroups

    p = real_platform
    await p.deploy(FunctionSpec(name=unique_id, image=f"{unique_id}:1", scale={"min": 0, "max": 1}))  # type: ignore[arg-type]
    await p.executions.invoke(unique_id, Invocation(body=b"a"))
    pool = p.runner.pools[unique_id]
    (slot,) = pool._slots
    worker = slot.worker.worker  # type: ignore[attr-defined]
    counter = worker._oom
    fd = counter._fd
    assert fd is not None  # opened by the first request, kept for the next ones
    assert counter.read() == cgroups.oom_kills(worker.id) == 0
    await p.executions.invoke(unique_id, Invocation(body=b"b"))
    assert counter._fd == fd
    target = os.readlink(f"/proc/self/fd/{fd}")
    assert worker.id in target and os.path.basename(target) in ("memory.oom_control", "memory.events")
    await p.runner.drop(unique_id)  # closes the worker
    assert counter._fd is None
    assert not os.path.exists(f"/proc/self/fd/{fd}") or worker.id not in os.readlink(f"/proc/self/fd/{fd}")
