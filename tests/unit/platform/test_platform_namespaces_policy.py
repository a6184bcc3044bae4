"""Namespace policy: ids, who may act where, quota checks and reservations, upgrade of older databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from faasd.api.errors import http_status
from faasd.errors import ForbiddenError, InvalidInputError, NotFoundError
from faasd.platform.errors import QuotaExceededError, StorageQuotaExceededError
from faasd.platform.functions import FunctionService
from faasd.platform.keys import ApiKeyService
from faasd.platform.namespaces import (
    DEFAULT_NAMESPACE,
    Access,
    NamespaceService,
    Quotas,
    check_namespace,
    function_id,
    parse_function_address,
    secret_id,
    split_function_id,
    split_secret_id,
)
from faasd.platform.quotas import QuotaGuard, Usage, check
from faasd.state import Base, Database

pytestmark = pytest.mark.unit


def test_ids_round_trip_and_default_namespace_keeps_plain_names() -> None:
    assert DEFAULT_NAMESPACE == "openfaas-fn"
    assert function_id("hello") == "hello" and split_function_id("hello") == ("hello", DEFAULT_NAMESPACE)
    assert function_id("hello", "team-a") == "hello.team-a"
    assert split_function_id("hello.team-a") == ("hello", "team-a")
    assert parse_function_address("hello.openfaas-fn") == ("hello", DEFAULT_NAMESPACE)
    assert function_id(*parse_function_address("hello.openfaas-fn")) == "hello"
    assert secret_id("db.pw", "team-a") == "team-a/db.pw" and split_secret_id("team-a/db.pw") == (
        "db.pw",
        "team-a",
    )
    assert secret_id("db.pw") == "db.pw" and split_secret_id("db.pw") == ("db.pw", DEFAULT_NAMESPACE)
    with pytest.raises(NotFoundError):
        function_id("x.team-b", "team-a")  # a dotted name never reaches another namespace
    with pytest.raises(NotFoundError):
        function_id("x.team-b", DEFAULT_NAMESPACE)
    with pytest.raises(NotFoundError):
        secret_id("team-b/x", DEFAULT_NAMESPACE)


@pytest.mark.parametrize("bad", ["", "A", "a_b", "-a", "a-", "a.b", "x" * 64, "a/b"])
def test_namespace_names_are_dns_labels(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        check_namespace(bad)
    assert check_namespace("team-1") == "team-1"


def test_access_of_bound_and_unbound_keys() -> None:
    bound = Access("team-a")
    assert bound.target() == "team-a" and bound.target("team-a") == "team-a"
    assert bound.scope() == "team-a"
    assert bound.sees("team-a") and not bound.sees("team-b") and not bound.sees(DEFAULT_NAMESPACE)
    with pytest.raises(ForbiddenError):
        bound.target("team-b")
    with pytest.raises(ForbiddenError):
        bound.scope("team-b")
    everything = Access(None)
    assert everything.target() == DEFAULT_NAMESPACE and everything.target("team-b") == "team-b"
    assert everything.scope() is None and everything.scope("team-b") == "team-b"
    assert everything.sees("anything")


def test_quota_check_names_quota_limit_and_use() -> None:
    q = Quotas(max_sandboxes=2, max_memory_mb=512, max_disk_mb=100, max_snapshots=1)
    check("a", q, Usage(sandboxes=1, memory_mb=256), Usage(sandboxes=1, memory_mb=256))  # exactly fits
    with pytest.raises(QuotaExceededError) as e:
        check("a", q, Usage(sandboxes=2), Usage(sandboxes=1))
    assert http_status(e.value) == 429 and e.value.code == "quota_exceeded"
    assert e.value.details == {
        "namespace": "a",
        "quota": "max_sandboxes",
        "limit": 2,
        "used": 2,
        "requested": 1,
    }
    assert "max_sandboxes" in e.value.message and "limit is 2" in e.value.message
    with pytest.raises(QuotaExceededError) as e:
        check("a", q, Usage(memory_mb=300), Usage(sandboxes=1, memory_mb=300))
    assert e.value.details["quota"] == "max_memory_mb"
    with pytest.raises(QuotaExceededError) as e:
        check("a", q, Usage(snapshots=1), Usage(snapshots=1))
    assert e.value.details["quota"] == "max_snapshots"
    with pytest.raises(StorageQuotaExceededError) as se:
        check("a", q, Usage(disk_mb=90), Usage(disk_mb=20))
    assert http_status(se.value) == 507 and se.value.code == "storage_quota_exceeded"
    # asking for none of a resource never fails on it, even when already over
    check("a", q, Usage(sandboxes=5, disk_mb=500), Usage(snapshots=0, memory_mb=0))
    check("a", Quotas(), Usage(sandboxes=10**6), Usage(sandboxes=10**6))  # unlimited


def test_reservations_count_until_the_start_ends() -> None:
    used = Usage()
    guard = QuotaGuard(lambda ns: Quotas(max_sandboxes=2), lambda ns: used)
    with guard.reserve("a", Usage(sandboxes=1)):
        assert guard.pending("a") == Usage(sandboxes=1)
        with guard.reserve("a", Usage(sandboxes=1)):
            with pytest.raises(QuotaExceededError), guard.reserve("a", Usage(sandboxes=1)):
                pass
            assert guard.pending("a") == Usage(sandboxes=2)
            assert guard.pending("b") == Usage()
    assert guard.pending("a") == Usage()
    with pytest.raises(RuntimeError), guard.reserve("a", Usage(sandboxes=2)):
        raise RuntimeError("start failed")
    assert guard.pending("a") == Usage()  # released on failure too
    with pytest.raises(QuotaExceededError):
        guard.check("a", Usage(sandboxes=3))


def test_namespace_registry(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/ns.db")
    db.create_all()
    svc = NamespaceService(db)
    assert [n.name for n in svc.list()] == [DEFAULT_NAMESPACE]
    svc.create("team-a", Quotas(max_snapshots=3))
    assert svc.quotas("team-a") == Quotas(max_snapshots=3)
    svc.set_quotas("team-a", {"max_sandboxes": 1})
    assert svc.quotas("team-a") == Quotas(max_sandboxes=1, max_snapshots=3)
    with pytest.raises(InvalidInputError):
        svc.set_quotas("team-a", {"max_cpu": 1})
    with pytest.raises(InvalidInputError):
        svc.set_quotas("team-a", {"max_sandboxes": -1})
    with pytest.raises(NotFoundError):
        svc.require("team-b")
    assert svc.require(DEFAULT_NAMESPACE) == DEFAULT_NAMESPACE


def test_older_database_rows_land_in_the_default_namespace(tmp_path: Path) -> None:
    """A database written before namespaces: functions, secrets and keys gain the columns with defaults;
    its keys span every namespace, its functions and secrets are in the default one."""
    path = tmp_path / "old.db"
    old = Database(f"sqlite:///{path}")
    Base.metadata.create_all(old.engine)
    old.dispose()
    con = sqlite3.connect(path)  # the tables as an older faasd wrote them: no namespace columns
    for table in ("functions", "secrets", "api_keys", "instances", "jobs"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN namespace")
    con.execute("DROP TABLE namespaces")
    con.execute(
        "INSERT INTO functions (name, image, runtime, env, secrets, memory_mb, cpu_cores, pids, timeout_s, "
        "disk_mb, scale_min, scale_max, concurrency, queue_size, idle_ttl_s, mode, labels, annotations, "
        "invocation_count, created_at, updated_at) VALUES ('old-fn', 'faasd/python:latest', 'python', '{}', "
        "'[]', 256, 1.0, 256, 30.0, 1024, 0, 4, 1, 100, 300.0, 'cached', '{}', '{}', 0, "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    con.execute(
        "INSERT INTO secrets (name, value, created_at, updated_at) VALUES ('old-secret', x'00', "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    con.commit()
    con.close()
    db = Database(f"sqlite:///{path}")
    db.create_all()
    assert NamespaceService(db).list()[0].name == DEFAULT_NAMESPACE
    keys = ApiKeyService(db)
    _row, token = keys.create("new", ["invoke"])
    with db.engine.begin() as conn:  # an "old" key: written without the namespace column
        conn.exec_driver_sql("UPDATE api_keys SET namespace = NULL")
    assert keys.verify(token).namespace is None and keys.verify(token).access.scope() is None
    fns = FunctionService(db)
    old_fn = fns.get("old-fn")
    assert old_fn.namespace == DEFAULT_NAMESPACE and fns.list(DEFAULT_NAMESPACE)[0].name == "old-fn"
    assert fns.list("team-a") == []
    from faasd.platform.secrets import SecretService

    sec = SecretService(db)
    assert sec.values(["old-secret"]) == {"old-secret": b"\x00"}
    assert [s.namespace for s in sec.list()] == [DEFAULT_NAMESPACE]


def test_snapshot_owner_label_function_instance_then_parent() -> None:
    from faasd.platform.tenancy import snapshot_namespace
    from faasd.snapshots.store import Snapshot, SnapshotMeta, SnapshotSizes

    def snap(sid: str, parent: str | None = None, **meta: object) -> Snapshot:
        return Snapshot(sid, "2026-01-01", SnapshotMeta(parent=parent, **meta), {}, SnapshotSizes())  # type: ignore[arg-type]

    instances = {"in-1": "team-i"}
    by_id = {
        "snap-l": snap("snap-l", labels={"faasd.namespace": "team-l", "faasd.instance": "in-1"}),
        "snap-f": snap("snap-f", function="fn.team-f"),
        "snap-i": snap("snap-i", labels={"faasd.instance": "in-1"}),
        "snap-c": snap("snap-c", parent="snap-f"),
        "snap-cc": snap("snap-cc", parent="snap-c"),
        "snap-o": snap("snap-o", function="plain"),
        "snap-x": snap("snap-x", parent="snap-gone"),
    }
    owner = {sid: snapshot_namespace(s, instances.get, by_id.get) for sid, s in by_id.items()}
    assert owner == {
        "snap-l": "team-l",  # the label wins
        "snap-f": "team-f",
        "snap-i": "team-i",
        "snap-c": "team-f",  # no owner of its own: its parent's
        "snap-cc": "team-f",
        "snap-o": DEFAULT_NAMESPACE,
        "snap-x": DEFAULT_NAMESPACE,
    }


async def test_quota_checked_worker_start_keeps_the_execution_journal_buffered(tmp_path: Path) -> None:
    """A cold start in a namespace with quotas reads quotas and use without a database session (a session
    would flush the write-behind execution journal), and is refused once the quota is reached."""
    import traceback

    import platform_fakes

    from faasd.config import Settings
    from faasd.platform.core import Platform, PlatformOptions
    from faasd.platform.functions import FunctionSpec
    from faasd.platform.invocation import Invocation

    s = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "c", auth=False)
    s.data_dir.mkdir(parents=True)
    p = Platform(s, platform_fakes.FakeFactory(), options=PlatformOptions(poll_interval_s=0.05))
    try:
        p.namespaces.create("team-q", Quotas(max_sandboxes=1, max_memory_mb=1024))
        for name in ("one", "two"):
            spec = FunctionSpec.model_validate({"name": name, "image": "faasd/python:latest"})
            await p.deploy(spec, "team-q")
        sessions: list[str] = []
        p.db.add_before_session(lambda: sessions.append("".join(traceback.format_stack())))
        await p.executions.invoke("one.team-q", Invocation(body=b"x"))
        assert p.runner.live_workers("one.team-q") == 1
        quota_sessions = [st for st in sessions if "tenancy.py" in st or "quotas.py" in st]
        assert quota_sessions == []  # the quota check opened no session
        assert p.tenancy.usage("team-q") == Usage(sandboxes=1, memory_mb=256)
        with pytest.raises(QuotaExceededError):
            await p.executions.invoke("two.team-q", Invocation(body=b"x"))
        assert p.runner.live_workers("two.team-q") == 0
    finally:
        await p.close()
        p.db.dispose()
