"""The write-behind journal of sync/stream execution records (``ExecutionJournal``).

Real SQLite database, worker test double (orchestration logic only). What must hold: every read through a
session sees the buffered rows; records are written in order and flushed on shutdown; async invocations
are still committed before ``submit`` returns; a failed write is retried, not lost.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from perf_fakes import FakeFactory, deploy, raw_rows
from sqlalchemy.exc import OperationalError

from faasd.errors import NotFoundError
from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation

pytestmark = pytest.mark.unit


async def test_sync_records_are_buffered_and_every_session_sees_them(plat: Platform) -> None:
    plat.executions.journal.delay_s = 60.0  # only an explicit read may write them here
    await deploy(plat)
    out = await plat.executions.invoke("hello", Invocation(body=b"hi"))
    assert plat.executions.journal.pending == 2  # create + finish, nothing written yet
    assert raw_rows(plat, "SELECT id FROM executions WHERE id = ?", out.execution_id) == []
    # any read through a session writes the pending rows first
    ex = plat.executions.get(out.execution_id)
    assert plat.executions.journal.pending == 0
    assert ex.status == "succeeded" and ex.result_body == b"echo:hi" and ex.kind == "sync"
    assert ex.request_body == b"hi" and ex.started_at is not None and ex.finished_at is not None
    assert ex.cold_start is True and ex.http_status == 200 and ex.run_ms is not None
    assert plat.functions.get("hello").invocation_count == 1
    await plat.close()


async def test_running_row_is_visible_while_the_invocation_runs(plat: Platform, factory: FakeFactory) -> None:
    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    factory.gate = asyncio.Event()
    task = asyncio.create_task(plat.executions.invoke("hello", Invocation(body=b"slow")))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if plat.executions.journal.pending:
            break
    running = plat.executions.list("hello", status="running")
    assert len(running) == 1 and running[0].finished_at is None
    factory.gate.set()
    out = await task
    assert plat.executions.get(out.execution_id).status == "succeeded"
    assert out.execution_id == running[0].id
    assert plat.functions.get("hello").invocation_count == 1
    await plat.close()


async def test_concurrent_invocations_are_written_in_batches(plat: Platform) -> None:
    await deploy(plat)
    before = plat.executions.journal.batches_written
    outs = await asyncio.gather(
        *(plat.executions.invoke("hello", Invocation(body=b"%d" % i)) for i in range(40))
    )
    await asyncio.sleep(plat.executions.journal.delay_s * 3)  # the timer writes them, no session needed
    assert plat.executions.journal.pending == 0
    rows = dict(raw_rows(plat, "SELECT id, status FROM executions"))  # type: ignore[arg-type]
    assert {o.execution_id for o in outs} <= set(rows) and set(rows.values()) == {"succeeded"}
    assert raw_rows(plat, "SELECT invocation_count FROM functions WHERE name = 'hello'") == [(40,)]
    assert plat.executions.journal.batches_written - before < 40  # batched, not one write per request
    await plat.close()


async def test_close_flushes_everything(plat: Platform) -> None:
    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    outs = [await plat.executions.invoke("hello", Invocation(body=b"x")) for _ in range(3)]
    assert plat.executions.journal.pending == 6  # (the async loop is not started: it reads through sessions)
    await plat.close()
    assert plat.executions.journal.pending == 0
    got = raw_rows(plat, "SELECT status FROM executions WHERE kind = 'sync'")
    assert [r[0] for r in got] == ["succeeded"] * 3 and len(outs) == 3
    assert raw_rows(plat, "SELECT invocation_count FROM functions WHERE name = 'hello'") == [(3,)]
    # after shutdown a record is written at once
    out = await plat.executions.invoke("hello", Invocation(body=b"late"))
    assert raw_rows(plat, "SELECT status FROM executions WHERE id = ?", out.execution_id) == [("succeeded",)]
    await plat.close()


async def test_async_submit_is_committed_before_it_returns(plat: Platform) -> None:
    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    ex = plat.executions.submit("hello", Invocation(body=b"later"))
    # visible to another connection at once: durable before the 202, not in the journal
    assert raw_rows(plat, "SELECT status, request_body FROM executions WHERE id = ?", ex.id) == [
        ("queued", b"later")
    ]
    assert plat.executions.journal.pending == 0
    plat.executions.start()
    await plat.executions.wait_idle(10)
    # the async result is written directly too
    assert raw_rows(plat, "SELECT status FROM executions WHERE id = ?", ex.id) == [("succeeded",)]
    await plat.close()


async def test_log_lines_are_stored_after_their_execution_row(plat: Platform) -> None:
    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    out = await plat.executions.invoke("hello", Invocation(body=b"print"))
    entries = plat.logs.for_execution(out.execution_id)
    assert [e.text for e in entries] == ["printed"]
    assert plat.executions.get(out.execution_id).stdout == "printed\n"
    await plat.close()


async def test_stream_records_go_through_the_journal(plat: Platform) -> None:
    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    session = await plat.executions.open_stream("hello", Invocation(body=b"abc"))
    events = [e async for e in session.events()]
    assert events[-1].body == b"ABC"  # type: ignore[union-attr]
    ex = plat.executions.get(session.execution_id)
    assert ex.kind == "stream" and ex.status == "succeeded" and ex.stdout == "chunk\n"
    await plat.close()


async def test_a_failed_write_is_kept_and_retried_in_order(
    plat: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = plat.executions.journal
    journal.delay_s = 60.0
    await deploy(plat)
    first = await plat.executions.invoke("hello", Invocation(body=b"1"))
    real_write = journal._write
    calls: list[int] = []

    def failing(ops: list[tuple[str, str, dict[str, object]]]) -> None:
        calls.append(len(ops))
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(journal, "_write", failing)
    assert journal.flush() is False
    assert journal.pending == 2 and calls == [2]
    second = await plat.executions.invoke("hello", Invocation(body=b"2"))
    monkeypatch.setattr(journal, "_write", real_write)
    assert journal.flush() is True
    for out in (first, second):
        assert plat.executions.get(out.execution_id).status == "succeeded"
    assert plat.functions.get("hello").invocation_count == 2
    await plat.close()


async def test_unknown_function_is_a_404_and_records_nothing(plat: Platform) -> None:
    with pytest.raises(NotFoundError, match="deploy it first"):
        await plat.executions.invoke("nope", Invocation(body=b""))
    assert plat.executions.journal.pending == 0
    await plat.close()


async def test_function_update_is_seen_by_the_next_invocation(plat: Platform) -> None:
    await deploy(plat, env={"A": "1"}, limits={"timeout_s": 5})
    out = await plat.executions.invoke("hello", Invocation(body=b"a"))
    assert out.runtime == "python"
    await plat.update(
        "hello",
        FunctionSpec.model_validate(
            {"name": "hello", "image": "faasd/python:latest", "limits": {"timeout_s": 7}}
        ),
    )
    assert plat.executions.function_record("hello").timeout_s == 7
    await plat.close()


async def test_large_bodies_are_written_at_once(plat: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    from faasd.platform.executions import journal as executions

    monkeypatch.setattr(executions, "JOURNAL_MAX_BYTES", 1000)
    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    small = await plat.executions.invoke("hello", Invocation(body=b"s"))
    assert plat.executions.journal.pending == 2
    big = await plat.executions.invoke("hello", Invocation(body=b"b" * 2000))
    assert plat.executions.journal.pending == 0  # the buffer's memory is bounded
    got = dict(raw_rows(plat, "SELECT id, length(request_body) FROM executions"))  # type: ignore[arg-type]
    assert got == {small.execution_id: 1, big.execution_id: 2000}
    await plat.close()


def _journal_row(ex_id: str, **over: object) -> dict[str, object]:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)
    row: dict[str, object] = {
        "id": ex_id,
        "function": "hello",
        "kind": "sync",
        "status": "succeeded",
        "request_body": b"\x00hi",
        "request_truncated": True,
        "request_headers": {"x-a": "é", "n": [1, 2]},
        "request_path": "/p",
        "request_method": "PUT",
        "request_query": "a=1",
        "callback_url": None,
        "created_at": now,
        "attempts": 1,
        "started_at": now,
        "not_before": None,
        "result_body": None,
        "result_truncated": False,
        "result_headers": {},
        "http_status": 201,
        "error": None,
        "exit_code": None,
        "stdout": "out",
        "stderr": "",
        "init_ms": None,
        "wait_ms": 0.25,
        "run_ms": 1.5,
        "cold_start": False,
        "finished_at": now,
    }
    row.update(over)
    return row


async def test_the_compiled_insert_stores_what_core_stores(plat: Platform) -> None:
    """The journal's SQLite insert (compiled once, the columns' own bind processors, straight to the
    driver) writes exactly the bytes SQLAlchemy Core's executemany writes for the same row."""
    from sqlalchemy import insert

    from faasd.state import Execution

    await deploy(plat)
    journal = plat.executions.journal
    journal.done(_journal_row("ex_plan"), "hello")
    assert journal.flush()
    assert [p for p in journal._plans.values() if p is not None], "the compiled plan was not used"
    with plat.db.engine.begin() as conn:
        conn.execute(insert(Execution.__table__), [_journal_row("ex_core")])  # type: ignore[arg-type]
    both = raw_rows(plat, "SELECT * FROM executions WHERE id IN ('ex_plan', 'ex_core')")
    rows = {r[0]: r[1:] for r in both}
    assert rows["ex_plan"] == rows["ex_core"]
    ex = plat.executions.get("ex_plan")
    assert ex.request_headers == {"x-a": "é", "n": [1, 2]} and ex.request_body == b"\x00hi"
    assert ex.created_at is not None and ex.created_at.microsecond == 123456
    await plat.close()


async def test_a_batch_converted_column_by_column_stores_what_core_stores(plat: Platform) -> None:
    """A batch goes to the driver a column at a time: a column whose values are all bytes, bools, floats
    or None as they are, the others through their processors, a column holding the same objects as one
    already converted (a row's ``created_at`` is its ``started_at``) reusing its values. Whatever the mix,
    every row is stored exactly as Core stores it alone."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from faasd.state import Execution

    await deploy(plat)
    base = _journal_row("x")["created_at"]
    assert isinstance(base, datetime)
    later = base + timedelta(seconds=1)
    variants: list[dict[str, object]] = [
        {},  # created_at is started_at (the same object)
        {"started_at": later, "finished_at": later + timedelta(microseconds=1)},
        {"created_at": datetime(2026, 12, 6, 12, 0, 0)},  # naive: UTC, no microseconds
        {"init_ms": 3, "wait_ms": None, "run_ms": 2.0},  # an int among floats: the column is converted
        {"request_body": b"", "result_body": b"\xff" * 3, "request_truncated": False, "cold_start": None},
        {"request_headers": {"a": "b"}, "result_headers": {"a": "b"}, "not_before": later},
    ]
    journal = plat.executions.journal
    journal.done_many([_journal_row(f"ex_plan{i}", **v) for i, v in enumerate(variants)], "hello")
    assert journal.flush()
    with plat.db.engine.begin() as conn:
        for i, v in enumerate(variants):
            conn.execute(insert(Execution.__table__), [_journal_row(f"ex_core{i}", **v)])  # type: ignore[arg-type]
    rows = {r[0]: r[1:] for r in raw_rows(plat, "SELECT * FROM executions")}
    types = {
        r[0]: r[1:]
        for r in raw_rows(plat, "SELECT id, typeof(init_ms), typeof(request_body) FROM executions")
    }
    for i in range(len(variants)):
        assert rows[f"ex_plan{i}"] == rows[f"ex_core{i}"], variants[i]
        assert types[f"ex_plan{i}"] == types[f"ex_core{i}"], variants[i]
    ex = plat.executions.get("ex_plan1")
    assert ex.started_at == later.replace(tzinfo=UTC) and ex.created_at == base
    await plat.close()


async def test_rows_without_a_column_go_through_core(
    plat: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch whose later row lacks a column of the first one is handed to Core, which refuses it as it
    always did (the batch is kept for a retry), instead of failing inside the compiled path."""
    await deploy(plat)
    journal = plat.executions.journal
    first = _journal_row("ex_full")
    second = _journal_row("ex_short")
    del second["stdout"]
    journal.done(first, "hello")
    journal.done(second, "hello")
    assert not journal.flush()
    assert journal.pending == 2
    # Core's own refusal (a KeyError from the compiled path would be logged instead)
    assert "A value is required for bind parameter 'stdout'" in caplog.text
    journal._ops.clear()
    await plat.close()


@functools.cache
def _sqlite_processors() -> tuple[dict[str, Any], dict[str, Any]]:
    """The journal plan's processors of every ``executions`` column on SQLite, and the dialect's own."""
    from sqlalchemy import insert
    from sqlalchemy.dialects import sqlite

    from faasd.platform.executions.journal import _InsertPlan
    from faasd.state import Execution

    table = Execution.__table__
    dialect = sqlite.dialect()
    plan = _InsertPlan.build(insert(table), dialect, tuple(c.name for c in table.columns))  # type: ignore[arg-type]
    assert plan is not None
    own = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns}
    return dict(plan.procs), own


_HEADERS = st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.sampled_from([None, UTC])
    ),
    headers=st.one_of(_HEADERS, st.dictionaries(st.text(max_size=4), st.lists(st.integers()), max_size=2)),
    flag=st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1])),
)
def test_the_plans_cheaper_processors_give_the_dialects_values(
    when: datetime, headers: dict[str, Any], flag: bool | int | None
) -> None:
    """On SQLite the compiled insert's datetime, JSON and boolean processors are stand-ins for the
    dialect's own: for any time (naive or UTC, microseconds or none, any year), any headers (repeated, or
    with values JSON must nest) and any flag each gives exactly the dialect processor's value."""
    procs, own = _sqlite_processors()
    checks = (
        ("created_at", when), ("request_headers", headers), ("result_headers", headers), ("cold_start", flag)
    )
    for column, value in checks:
        proc, reference = procs[column], own[column]
        assert proc is not None and reference is not None
        assert proc is not reference, f"{column} keeps the dialect's processor"
        assert proc(value) == reference(value)
        assert proc(value) == reference(value)  # a repeated value (memo) too
        assert proc(None) == reference(None)
    same_items, proc, reference = dict(headers), procs["request_headers"], own["request_headers"]
    assert proc is not None and reference is not None
    assert proc(same_items) == reference(same_items)  # equal items in another dict: the memo's text
