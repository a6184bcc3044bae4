"""Function/execution/secret/key services on a real SQLite database with a worker test double."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from platform_fakes import FakeFactory
from pydantic import ValidationError

from faasd.errors import CapacityError, ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from faasd.platform.core import Platform
from faasd.platform.errors import InvocationTimeoutError, RateLimitedError
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation
from faasd.platform.keys import KeyInfo, RateLimiter
from faasd.state import Execution

pytestmark = pytest.mark.unit


def spec(name: str = "hello", **kw: object) -> FunctionSpec:
    return FunctionSpec.model_validate({"name": name, "image": "faasd/python:latest", **kw})


async def test_function_crud_and_validation(platform: Platform) -> None:
    fn = await platform.deploy(spec(env={"A": "1"}, scale={"min": 0, "max": 2}))
    assert fn.handler == "handler:handle" and fn.env == {"A": "1"}
    with pytest.raises(ConflictError):
        await platform.deploy(spec())
    with pytest.raises(InvalidInputError, match="not a function mode"):
        await platform.deploy(spec("other", mode="persistent"))
    with pytest.raises(InvalidInputError, match="invalid"):
        await platform.deploy(spec("Bad_Name"))
    with pytest.raises(InvalidInputError, match="do not exist"):
        await platform.deploy(spec("needs-secret", secrets=["nope"]))
    with pytest.raises(ValidationError):
        spec("x", scale={"min": 3, "max": 1})
    with pytest.raises(ValidationError):
        spec("x", limits={"memory_mb": 1})
    updated = await platform.update("hello", spec(env={"A": "2"}))
    assert updated.env == {"A": "2"}
    assert [f.name for f in platform.functions.list()] == ["hello"]
    await platform.delete("hello")
    with pytest.raises(NotFoundError):
        platform.functions.get("hello")


async def test_sync_invoke_records_execution_and_logs(platform: Platform, fake_factory: FakeFactory) -> None:
    await platform.deploy(spec())
    out = await platform.executions.invoke(
        "hello", Invocation(body=b"hi", headers={"Authorization": "x", "X-Foo": "bar"})
    )
    assert out.status == "succeeded" and out.body == b"echo:hi" and out.cold
    out2 = await platform.executions.invoke("hello", Invocation(body=b"again"))
    assert not out2.cold and len(fake_factory.started) == 1
    ex = platform.executions.get(out.execution_id)
    assert ex.status == "succeeded" and ex.http_status == 200 and ex.result_body == b"echo:hi"
    assert ex.cold_start is True and ex.stdout == "line1\nline2\n"
    assert "authorization" not in ex.request_headers and ex.request_headers.get("x-foo") == "bar"
    lines = platform.logs.query("hello", tail=10)
    assert [ln.text for ln in lines][-3:] == ["line1", "line2", "warn"]
    assert platform.functions.get("hello").invocation_count == 2
    await platform.close()
    assert fake_factory.live == 0


async def test_function_error_and_timeout(platform: Platform, fake_factory: FakeFactory) -> None:
    await platform.deploy(spec())
    out = await platform.executions.invoke("hello", Invocation(body=b"raise"))
    assert out.status == "failed" and out.error == "ValueError: boom"
    with pytest.raises(InvocationTimeoutError) as info:
        await platform.executions.invoke("hello", Invocation(body=b"slow"))
    ex = platform.executions.get(info.value.details["execution_id"])
    assert ex.status == "timeout"
    # the timed-out worker is discarded, not reused
    assert fake_factory.started[0].id in fake_factory.closed
    await platform.close()


async def test_ephemeral_mode_uses_a_fresh_worker_each_time(
    platform: Platform, fake_factory: FakeFactory
) -> None:
    await platform.deploy(spec(mode="ephemeral"))
    for _ in range(3):
        out = await platform.executions.invoke("hello", Invocation(body=b"x"))
        assert out.cold
    await platform.runner.settled("hello")
    assert len(fake_factory.started) == 3 and fake_factory.live == 0


async def test_ephemeral_answers_before_its_worker_is_closed(
    platform: Platform, fake_factory: FakeFactory
) -> None:
    """The answer does not wait for the sandbox's teardown; the worker frees its place in the scale at
    once but counts as running (quotas) until closed; delete and shutdown wait for the closes."""
    await platform.deploy(spec(mode="ephemeral", scale={"min": 0, "max": 1}, queue_size=0))
    fake_factory.close_gate = asyncio.Event()
    out = await asyncio.wait_for(platform.executions.invoke("hello", Invocation(body=b"x")), 10)
    assert out.status == "succeeded" and fake_factory.live == 1  # answered, still being closed
    assert platform.runner.live_workers("hello") == 1
    # scale max 1, no queue: the place is free again although the first worker is not gone yet
    out2 = await asyncio.wait_for(platform.executions.invoke("hello", Invocation(body=b"y")), 10)
    assert out2.status == "succeeded" and fake_factory.live == 2
    closing = asyncio.create_task(platform.delete("hello"))
    await asyncio.sleep(0.05)
    assert not closing.done()  # deleting the function waits for its workers to be gone
    fake_factory.close_gate.set()
    await asyncio.wait_for(closing, 10)
    assert fake_factory.live == 0


async def test_saturated_sync_invoke_raises_capacity_error(
    platform: Platform, fake_factory: FakeFactory
) -> None:
    await platform.deploy(spec(scale={"min": 0, "max": 1}, queue_size=0))
    fake_factory.gate = asyncio.Event()
    first = asyncio.create_task(platform.executions.invoke("hello", Invocation(body=b"1")))
    while fake_factory.active < 1:
        await asyncio.sleep(0.001)
    with pytest.raises(CapacityError):
        await platform.executions.invoke("hello", Invocation(body=b"2"))
    fake_factory.gate.set()
    assert (await first).status == "succeeded"
    await platform.close()


async def test_async_invoke_is_persisted_then_drained(platform: Platform) -> None:
    await platform.deploy(spec())
    ex = platform.executions.submit("hello", Invocation(body=b"later"))
    assert platform.executions.get(ex.id).status == "queued"  # durable before the 202
    assert platform.executions.get(ex.id).request_body == b"later"
    await platform.executions.wait_idle(10)
    done = platform.executions.get(ex.id)
    assert done.status == "succeeded" and done.result_body == b"echo:later" and done.attempts == 1
    with pytest.raises(InvalidInputError):
        platform.executions.submit("hello", Invocation(), callback_url="ftp://x")
    await platform.close()


async def test_async_requeues_on_capacity_instead_of_failing(
    platform: Platform, fake_factory: FakeFactory
) -> None:
    await platform.deploy(spec(scale={"min": 0, "max": 1}, queue_size=0))
    fake_factory.gate = asyncio.Event()
    blocker = asyncio.create_task(platform.executions.invoke("hello", Invocation(body=b"block")))
    while fake_factory.active < 1:
        await asyncio.sleep(0.001)
    ex = platform.executions.submit("hello", Invocation(body=b"a"))
    await platform.executions.drain_once()
    await asyncio.sleep(0.05)
    row = platform.executions.get(ex.id)
    assert row.status == "queued" and row.not_before is not None and row.attempts == 0
    fake_factory.gate.set()
    await blocker
    await platform.executions.wait_idle(10)
    assert platform.executions.get(ex.id).status == "succeeded"
    await platform.close()


async def test_reconcile_requeues_async_and_fails_sync(platform: Platform, fake_factory: FakeFactory) -> None:
    await platform.deploy(spec())
    with platform.db.session() as s:
        s.add_all(
            [
                Execution(
                    id="ex_async1",
                    function="hello",
                    kind="async",
                    status="running",
                    attempts=1,
                    request_body=b"resume",
                ),
                Execution(id="ex_async2", function="hello", kind="async", status="running", attempts=3),
                Execution(id="ex_sync1", function="hello", kind="sync", status="running", attempts=1),
            ]
        )
    fake_factory.orphans = ["fd-hello-dead1"]
    report = await platform.start()
    assert report.requeued == ["ex_async1"]
    assert sorted(report.failed) == ["ex_async2", "ex_sync1"]
    assert report.orphans_removed == ["fd-hello-dead1"]
    assert "daemon stopped" in (platform.executions.get("ex_sync1").error or "")
    await platform.executions.wait_idle(10)
    resumed = platform.executions.get("ex_async1")
    assert resumed.status == "succeeded" and resumed.result_body == b"echo:resume" and resumed.attempts == 2
    await platform.close()
    assert fake_factory.live == 0


async def test_async_for_deleted_function_fails_clearly(platform: Platform) -> None:
    await platform.deploy(spec())
    ex = platform.executions.submit("hello", Invocation(body=b"x"))
    platform.functions.delete("hello")
    await platform.executions.wait_idle(10)
    row = platform.executions.get(ex.id)
    assert row.status == "failed" and "deleted" in (row.error or "")


async def test_scale_persists_and_prewarms(platform: Platform, fake_factory: FakeFactory) -> None:
    await platform.deploy(spec(scale={"min": 0, "max": 2}))
    fn = await platform.scale("hello", replicas=3)
    assert (fn.scale_min, fn.scale_max) == (3, 3)
    assert platform.runner.status(fn)["replicas"] == 3
    fn = await platform.scale("hello", replicas=0)
    assert platform.runner.status(fn)["replicas"] == 0 and fake_factory.live == 0
    with pytest.raises(InvalidInputError):
        await platform.scale("hello", min=3, max=2)
    await platform.close()


async def test_stream_session(platform: Platform) -> None:
    from faasd.platform.executions import Outcome, StreamStart
    from faasd.platform.invocation import StreamChunk

    await platform.deploy(spec())
    session = await platform.executions.open_stream("hello", Invocation(body=b"a b"))
    events = [ev async for ev in session.events()]
    assert isinstance(events[0], StreamStart)
    assert [e.data for e in events if isinstance(e, StreamChunk)] == [b"a\n", b"b\n", b"done\n"]
    assert isinstance(events[-1], Outcome) and events[-1].body == b"A B"
    ex = platform.executions.get(session.execution_id)
    assert ex.kind == "stream" and ex.status == "succeeded" and ex.stdout == "a\nb\n"
    await platform.close()


async def test_secrets(platform: Platform) -> None:
    platform.secrets.create("db-pass", b"s3cret")
    with pytest.raises(ConflictError):
        platform.secrets.create("db-pass", b"x")
    await platform.deploy(spec(secrets=["db-pass"]))
    with pytest.raises(ConflictError, match="used by"):
        platform.secrets.delete("db-pass")
    platform.secrets.update("db-pass", b"new")
    assert platform.secrets.values(["db-pass"]) == {"db-pass": b"new"}
    await platform.delete("hello")
    platform.secrets.delete("db-pass")
    assert platform.secrets.list() == []
    db_file = Path(platform.settings.data_dir / "faasd.db")
    assert stat.S_IMODE(os.stat(db_file).st_mode) == 0o600


def test_api_keys_scopes_and_bootstrap(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    token = platform.keys.bootstrap_admin(path)
    assert token is not None and path.read_text().strip() == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert platform.keys.bootstrap_admin(path) is None  # only on first start
    admin = platform.keys.verify(token)
    assert admin.scopes == {"admin", "deploy", "invoke"}
    _row, inv_token = platform.keys.create("ci", ["invoke"])
    inv = platform.keys.verify(inv_token)
    inv.require("invoke")
    with pytest.raises(ForbiddenError):
        inv.require("deploy")
    with pytest.raises(InvalidInputError):
        platform.keys.create("bad", ["root"])
    platform.keys.delete(inv.id)
    from faasd.errors import AuthError

    with pytest.raises(AuthError):
        platform.keys.verify(inv_token)


def test_token_bucket_rate_limit() -> None:
    limiter = RateLimiter()
    key = KeyInfo("k1", "k", frozenset({"invoke"}), rate_limit_rps=2.0, burst=2)
    limiter.check(key, now=100.0)
    limiter.check(key, now=100.0)
    with pytest.raises(RateLimitedError) as info:
        limiter.check(key, now=100.0)
    assert 0 < info.value.retry_after_s <= 0.5
    limiter.check(key, now=100.5)  # refilled one token
    unlimited = KeyInfo("k2", "u", frozenset({"invoke"}), None, None)
    for _ in range(100):
        limiter.check(unlimited, now=100.0)


async def test_logs_follow_tail_since_and_retention(platform: Platform) -> None:
    from datetime import timedelta

    logs = platform.logs
    logs.retention = 5
    follower = logs.follow("fx")
    first = asyncio.create_task(anext(follower))
    await asyncio.sleep(0)
    logs.append("fx", None, "w1", b"a\nb\n", b"c\n")
    assert (await first).text == "a"
    assert [e.text for e in logs.query("fx", tail=2)] == ["b", "c"]
    later = logs.query("fx")[-1].timestamp + timedelta(seconds=1)
    assert logs.query("fx", since=later) == []
    for i in range(3):
        logs.append("fx", None, None, f"{i}\n".encode(), b"")
    logs.prune("fx")
    assert [e.text for e in logs.query("fx")] == ["b", "c", "0", "1", "2"]
    await follower.aclose()


async def test_stream_abandoned_midway_discards_worker_and_records_failure(
    platform: Platform, fake_factory: FakeFactory
) -> None:
    await platform.deploy(spec())
    session = await platform.executions.open_stream("hello", Invocation(body=b"a b c"))
    events = session.events()
    await anext(events)  # start
    await anext(events)  # first chunk, then the client goes away
    await events.aclose()
    for _ in range(100):
        if fake_factory.live == 0:
            break
        await asyncio.sleep(0.01)
    assert fake_factory.live == 0  # a worker interrupted mid-request is not reused
    ex = platform.executions.get(session.execution_id)
    assert ex.status == "failed" and "interrupted" in (ex.error or "")
    await platform.close()


async def test_prune_deletes_only_old_finished_executions(platform: Platform) -> None:
    from datetime import timedelta

    from faasd.state.models import utcnow

    old = utcnow() - timedelta(days=30)
    with platform.db.session() as s:
        s.add_all(
            [
                Execution(id="ex_old", function="f", status="succeeded", created_at=old, finished_at=old),
                Execution(id="ex_oldq", function="f", status="queued", created_at=old),
                Execution(id="ex_new", function="f", status="failed", finished_at=utcnow()),
            ]
        )
    assert platform.executions.prune() == 1
    assert {e.id for e in platform.executions.list(limit=10)} == {"ex_oldq", "ex_new"}


async def test_network_option_is_kept_and_reaches_the_worker(
    platform: Platform, fake_factory: FakeFactory
) -> None:
    from faasd.platform.functions import to_spec

    fn = await platform.deploy(spec("outbound", network="egress", annotations={"team": "a"}))
    assert to_spec(fn).network == "egress" and to_spec(fn).annotations == {"team": "a"}
    out = await platform.executions.invoke("outbound", Invocation(body=b"x"))
    assert out.status == "succeeded"
    assert fake_factory.started[-1].config.network == "egress"
    # the default stays "none", and an update can take egress away again
    fn = await platform.update("outbound", spec("outbound"))
    assert to_spec(fn).network == "none" and "faasd.network" not in fn.annotations
    with pytest.raises(ValidationError):
        spec("x", network="host")
    with pytest.raises(InvalidInputError, match="reserved"):
        await platform.deploy(spec("sneaky", annotations={"faasd.network": "egress"}))
    await platform.close()
