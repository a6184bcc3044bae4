"""Records of the requests workers served on handed-over connections (``ExecutionService.record_handed``
and its bulk path ``record_served``): one row each, the same columns and metrics either way.

Real SQLite database, worker test double (orchestration logic only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from perf_fakes import FakeFactory, deploy, raw_rows

from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions
from faasd.platform.invocation import Invocation

pytestmark = pytest.mark.unit


async def test_a_handed_request_is_one_row_written_once(plat: Platform) -> None:
    """A request a worker served on a handed-over connection: one journal operation (created and finished
    at once), the same row and counts as a proxied invocation, its output stored as log lines."""
    import time

    from faasd.runtime.gateway_channel import HandedRequest

    plat.executions.journal.delay_s = 60.0
    await deploy(plat)
    handed = HandedRequest(
        id="ex_" + "ab" * 12,
        method="POST",
        path="/function/hello",
        query="",
        headers={"content-type": "text/plain", "authorization": "Bearer secret"},
        final={"type": "result", "status": 201, "headers": [["x-a", "1"]], "run_ms": 0.5},
        body=b"hi",
        result=b"made",
        stdout=b"printed\n",
        stderr=b"",
        wall_ms=0.7,
        started=time.time() - 1,
        status=201,
    )
    journal = plat.executions.journal
    kinds: list[str] = []
    record = journal._record

    def counting(op: tuple[str, str, dict[str, object]]) -> None:
        kinds.append(op[0])
        record(op)  # type: ignore[arg-type]

    journal._record = counting  # type: ignore[method-assign]
    inv = Invocation(body=b"hi", headers=handed.headers, path="/", method="POST")
    out = plat.executions.record_handed("hello", inv, handed, output_limit=1 << 20)
    assert out.execution_id == handed.id and out.http_status == 201 and out.status == "succeeded"
    assert kinds == ["done"]
    ex = plat.executions.get(handed.id)
    assert ex.status == "succeeded" and ex.http_status == 201 and ex.result_body == b"made"
    assert ex.request_body == b"hi" and ex.cold_start is False and ex.run_ms == 0.5
    assert "authorization" not in ex.request_headers and ex.result_headers == {"x-a": "1"}
    assert ex.created_at is not None and ex.finished_at is not None
    assert ex.created_at.timestamp() == pytest.approx(handed.started, abs=1e-5)
    # the end the worker reported (started + wall time), not when the daemon read the report (1 s later)
    assert (ex.finished_at - ex.created_at).total_seconds() == pytest.approx(0.0007, abs=1e-5)
    assert plat.functions.get("hello").invocation_count == 1
    assert "printed" in "".join(e.text for e in plat.logs.for_execution(handed.id))
    await plat.close()


def _handed(i: int, **over: Any) -> Any:
    import time

    from faasd.runtime.gateway_channel import HandedRequest

    fields: dict[str, Any] = {
        "id": f"ex_{i:024x}",
        "method": "POST",
        "path": "/function/hello/sub",
        "query": "a=1",
        "headers": {"content-type": "text/plain", "authorization": "Bearer secret", "x-trace": "t"},
        "final": {"type": "result", "status": 200, "headers": [["x-a", "1"], ["X-A", "2"]], "run_ms": 0.5},
        "body": b"hi",
        "result": b"made",
        "stdout": b"",
        "stderr": b"",
        "wall_ms": 0.7,
        "started": time.time() - 1,
        "status": 200,
    }
    fields.update(over)
    return HandedRequest(**fields)


def _plain_reports() -> list[Any]:
    from faasd.platform.executions.records import STORED_BODY_LIMIT

    return [
        _handed(1),
        _handed(2, final={"type": "result", "status": 500, "headers": [], "run_ms": None, "exit_code": 0}),
        _handed(3, final={"type": "result", "status": 201, "headers": [["k", "v"], ["bad"]], "run_ms": 3}),
        _handed(4, body=b"x" * (STORED_BODY_LIMIT + 1), result=b"y" * (STORED_BODY_LIMIT + 1), query=""),
        _handed(5, final={"type": "result"}, headers={}),
    ]


def _samples(plat: Platform) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for metric in plat.metrics.registry.collect():
        for s in metric.samples:
            if s.name.endswith("_created"):  # when the series was made
                continue
            if s.labels.get("function") == "hello" or s.name.startswith("faasd_errors"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_plain_reports_in_bulk_make_the_rows_and_metrics_record_handed_makes(
    tmp_path: Path, factory: FakeFactory
) -> None:
    """``record_served`` builds the rows of plainly answered requests directly (``served.plain_row``);
    every column of every row, and every metric, is what ``record_handed`` makes of the same reports
    (statuses below and above 500, a run time missing or an int, repeated and malformed header pairs,
    bodies over the stored limit, credentials among the request headers)."""
    plats = []
    for side in ("bulk", "one"):
        s = Settings(
            data_dir=tmp_path / side / "data",
            run_dir=tmp_path / side / "run",
            cache_dir=tmp_path / "cache",
            auth=False,
        )
        s.data_dir.mkdir(parents=True)
        plat = Platform(s, factory, options=PlatformOptions(poll_interval_s=0.05))
        await deploy(plat)
        plats.append(plat)
    bulk, one = plats
    reports = _plain_reports()
    path = "/sub"
    assert bulk.executions.record_served("hello", [(h, path) for h in reports]) == []
    for h in reports:
        inv = Invocation(body=h.body, headers=h.headers, path=path, method=h.method, query=h.query)
        one.executions.record_handed("hello", inv, h, output_limit=1 << 20)
    for plat in plats:
        assert plat.executions.journal.flush()
    rows = [raw_rows(plat, "SELECT * FROM executions ORDER BY id") for plat in plats]
    assert len(rows[0]) == len(reports) and rows[0] == rows[1]
    assert _samples(bulk) == pytest.approx(_samples(one))  # sums: observed in another order
    assert bulk.functions.get("hello").invocation_count == len(reports)
    for plat in plats:
        await plat.close()


async def test_reports_that_are_not_plain_are_left_to_record_handed(plat: Platform) -> None:
    await deploy(plat)
    reports = [
        _handed(1, stdout=b"printed\n"),
        _handed(2),
        _handed(3, final={"type": "error", "kind": "timeout", "message": "late"}),
        _handed(4, final={"type": "result", "status": "200"}),
        _handed(5, final={"type": "result", "status": 200, "run_ms": "fast"}),
    ]
    assert plat.executions.record_served("hello", [(h, "/") for h in reports]) == [0, 2, 3, 4]
    assert plat.executions.record_served("nope", [(h, "/") for h in reports[:2]]) == [0, 1]
    assert plat.executions.journal.flush()
    assert [r[0] for r in raw_rows(plat, "SELECT id FROM executions")] == [reports[1].id]
    await plat.close()
