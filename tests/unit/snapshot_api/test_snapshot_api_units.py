"""Orchestration logic of the snapshot service: pool hold, mode validation, merge base, CLI report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from faasd.cli import _context
from faasd.cli.main import app
from faasd.errors import CapacityError, InvalidInputError, NotFoundError
from faasd.platform.functions import BRANCH_FROM_ANNOTATION, FunctionSpec, to_spec
from faasd.platform.pool_models import PoolConfig
from faasd.platform.pools import WarmPool
from faasd.platform.snapshots import version_key
from faasd.platform.worker_protocol import WorkerConfig
from faasd.runtime.agent_client import InvokeEvent, InvokeRequest, InvokeResult
from faasd.sdk import Client
from faasd.snapshots.service import common_base
from faasd.snapshots.store import SnapshotMeta, SnapshotStore
from faasd.state import Function

pytestmark = pytest.mark.unit


class _Worker:
    def __init__(self, wid: str) -> None:
        self._id = wid
        self.closed = False

    @property
    def id(self) -> str:
        return self._id

    @property
    def alive(self) -> bool:
        return not self.closed

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        return InvokeResult(status=200, headers=[], body=b"ok")

    async def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        yield InvokeResult(status=200, headers=[], body=b"")

    async def close(self) -> None:
        self.closed = True


async def test_pool_hold_waits_for_idle_and_keeps_requests_off() -> None:
    n = 0

    async def start() -> _Worker:
        nonlocal n
        n += 1
        return _Worker(f"w{n}")

    pool = WarmPool("f", PoolConfig(min=0, max=2, concurrency=1), start)
    try:
        lease = await pool.acquire(5)
        assert pool.worker_ids() == ["w1"]
        held = asyncio.Event()

        async def hold() -> None:
            async with pool.hold("w1", 5) as w:
                assert w.id == "w1"
                held.set()
                # while held, a request gets another worker
                other = await pool.acquire(5)
                assert other.worker.id == "w2"
                await pool.release(other)

        task = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        assert not held.is_set()  # w1 is busy: hold waits
        await pool.release(lease)
        await asyncio.wait_for(task, 5)
        again = await pool.acquire(5)  # w1 is back in rotation
        assert again.worker.id in ("w1", "w2")
        await pool.release(again)
        with pytest.raises(NotFoundError):
            async with pool.hold("nope", 1):
                pass
        busy = await pool.acquire(5)
        busy2 = await pool.acquire(5)
        with pytest.raises(CapacityError):
            async with pool.hold(busy.worker.id, 0.05):
                pass
        await pool.release(busy)
        await pool.release(busy2)
    finally:
        await pool.close()


def test_mode_validation() -> None:
    base = {"name": "f", "image": "img"}
    FunctionSpec.model_validate({**base, "mode": "checkpointed"}).check()
    with pytest.raises(InvalidInputError, match="branch_from"):
        FunctionSpec.model_validate({**base, "mode": "branched"}).check()
    with pytest.raises(InvalidInputError, match="only valid with mode 'branched'"):
        FunctionSpec.model_validate({**base, "branch_from": "snap-1"}).check()
    with pytest.raises(InvalidInputError, match="not a function mode"):
        FunctionSpec.model_validate({**base, "mode": "persistent"}).check()
    spec = FunctionSpec.model_validate({**base, "mode": "branched", "branch_from": "snap-1"}).check()
    fn = Function(name="f")
    from faasd.platform.functions import _apply

    _apply(fn, spec)
    assert fn.annotations == {BRANCH_FROM_ANNOTATION: "snap-1"}
    back = to_spec(fn)
    assert back.branch_from == "snap-1" and back.annotations == {}


def test_version_key_tracks_what_shapes_the_worker() -> None:
    cfg = WorkerConfig(
        "f", "img", "python", "handler:handle", None, None, {"A": "1"}, {}, 256, 1.0, 64, 30, 64
    )
    same = WorkerConfig(
        "f", "img", "python", "handler:handle", None, None, {"A": "1"}, {"s": b"x"}, 256, 1.0, 64, 30, 64
    )
    other = WorkerConfig(
        "f", "img", "python", "handler:handle", None, None, {"A": "2"}, {}, 256, 1.0, 64, 30, 64
    )
    assert version_key(cfg, "sha256:1") == version_key(same, "sha256:1")
    assert version_key(cfg, "sha256:1") != version_key(other, "sha256:1")
    assert version_key(cfg, "sha256:1") != version_key(cfg, "sha256:2")


def _snap(store: SnapshotStore, tmp: Path, name: str, parent: str | None) -> str:
    d = tmp / name
    (d / "upper").mkdir(parents=True)
    (d / "upper" / f"{name}.txt").write_text(name)
    return store.create({"upper": d / "upper"}, SnapshotMeta(parent=parent)).id


def test_merge_base_is_the_nearest_common_ancestor(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "store")
    root = _snap(store, tmp_path, "root", None)
    a = _snap(store, tmp_path, "a", root)
    b = _snap(store, tmp_path, "b", root)
    a2 = _snap(store, tmp_path, "a2", a)
    other = _snap(store, tmp_path, "other", None)
    assert common_base(store, [a, b]) == root
    assert common_base(store, [a2, b]) == root
    assert common_base(store, [a2, a, b][::2]) == root
    with pytest.raises(InvalidInputError, match=r"no common base.*share no ancestor"):
        common_base(store, [a, other])
    with pytest.raises(InvalidInputError, match=r"no common base.*is an ancestor"):
        common_base(store, [a, a2])  # a is an ancestor of a2: not two branches of one base


REPORT = {
    "strategy": "fail",
    "branches": ["snap-a", "snap-b"],
    "taken": {"snap-a": ["var/tmp/a"], "snap-b": ["var/tmp/b"]},
    "identical": [],
    "conflicts": [
        {
            "path": "var/tmp/shared",
            "kind": "both-modified",
            "sides": {"snap-a": "file 1 B", "snap-b": "file 2 B"},
            "resolution": "fail",
            "kept_copies": {},
        }
    ],
    "dropped": {},
    "result": "",
}


def test_cli_merge_prints_conflicts_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        sent.append(request)
        return httpx.Response(
            409,
            json={"error": "conflict", "message": "merge has 1 conflict(s)", "details": {"report": REPORT}},
        )

    monkeypatch.setattr(
        _context,
        "client_factory",
        lambda s: Client("http://faasd.test", api_key="k", transport=httpx.MockTransport(handle)),
    )
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["merge", "snap-a", "fd-x-1", "--strategy", "fail"]
    )
    assert result.exit_code == 1
    assert "/var/tmp/shared" in result.stdout and "both-modified" in result.stdout
    assert "1 conflict" in result.stdout and "merge has 1 conflict" in result.stderr
    import json

    body = json.loads(sent[0].content)
    assert body["branches"] == ["snap-a", "fd-x-1"]  # every kind of id, in the order given
    assert body["strategy"] == "fail"
