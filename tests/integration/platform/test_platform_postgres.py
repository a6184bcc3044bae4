"""State and services against a throwaway PostgreSQL server.

initdb into a temp dir, unix socket in that dir, dynamic port; stopped and removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.platform.core import Platform, PlatformOptions
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation
from faasd.state import Database, Execution

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    base = Path(tempfile.mkdtemp(prefix="faasd-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    port = _free_port()
    try:
        r = _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "--username",
                "faasd",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ]
        )
        assert r.returncode == 0, r.stderr
        r = _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-t",
                "60",
                "-l",
                str(base / "pg.log"),
                "-o",
                f"-k {sock} -p {port} -c listen_addresses='' -c fsync=off",
                "start",
            ]
        )
        assert r.returncode == 0, r.stderr + (base / "pg.log").read_text()
        yield f"postgresql://faasd@/postgres?host={sock}&port={port}"
    finally:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    assert not db.is_sqlite and db.url.startswith("postgresql+psycopg://")
    db.create_all()
    yield db
    _drop_everything(db)
    db.dispose()


def _drop_everything(db: Database) -> None:
    from sqlalchemy import text

    import faasd.state.instance_models  # noqa: F401
    from faasd.state import Base

    Base.metadata.drop_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


def test_models_roundtrip_on_postgres(pg_db: Database) -> None:
    with pg_db.session() as s:
        s.add(
            Execution(
                id="ex_pg1",
                function="f",
                kind="async",
                status="queued",
                request_body=b"\x00\xff",
                request_headers={"x-a": "1"},
            )
        )
    with pg_db.session() as s:
        ex = s.get(Execution, "ex_pg1")
        assert ex is not None and ex.request_body == b"\x00\xff" and ex.request_headers == {"x-a": "1"}
        assert ex.created_at.tzinfo is not None


async def test_services_on_postgres(pg_db: Database, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "platform"))
    from platform_fakes import FakeFactory  # the worker double: this test is about the database

    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", auth=True, database_url=pg_db.url)
    factory = FakeFactory()
    p = Platform(settings, factory, db=pg_db, options=PlatformOptions(poll_interval_s=0.05))
    token = p.keys.bootstrap_admin(tmp_path / "admin.key")
    assert token is not None and p.keys.verify(token).scopes == {"admin", "deploy", "invoke"}
    p.secrets.create("s", b"v")
    await p.deploy(FunctionSpec(name="pgfn", image="img", secrets=["s"]))
    out = await p.executions.invoke("pgfn", Invocation(body=b"x"))
    assert out.status == "succeeded"
    ex = p.executions.submit("pgfn", Invocation(body=b"y"))
    with pg_db.session() as s:  # simulate a crash mid-run: reconcile must re-queue it
        row = s.get(Execution, ex.id)
        assert row is not None
        row.status, row.attempts = "running", 1
    report = await p.start()
    assert ex.id in report.requeued
    await p.executions.wait_idle(20)
    assert p.executions.get(ex.id).status == "succeeded"
    assert [ln.text for ln in p.logs.query("pgfn", tail=3)] == ["line1", "line2", "warn"]
    await p.close()
    await p.delete("pgfn")


def test_pre_alembic_database_is_adopted_on_postgres(pg_url: str) -> None:
    """A PostgreSQL database an older faasd made (create_all tables, one column and one table fewer, no
    alembic_version) is upgraded to head keeping its rows; a second start changes nothing."""
    from sqlalchemy import text

    import faasd.state.instance_models  # noqa: F401
    from faasd.state import Base, Function
    from faasd.state.instance_models import Instance
    from faasd.state.migrate import current_revisions, head_revision

    old = Database(pg_url)
    Base.metadata.create_all(old.engine)
    try:
        with old.session() as s:
            s.add(Function(name="old-pg", image="img", invocation_count=3))
        with old.engine.begin() as conn:
            for table in ("functions", "secrets", "api_keys", "instances"):  # from before namespaces
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN namespace"))
            conn.execute(text("DROP TABLE namespaces"))
            conn.execute(text("ALTER TABLE instances DROP COLUMN isolation"))
            conn.execute(text("DROP TABLE jobs"))
            conn.execute(
                text(
                    "INSERT INTO instances (id, status, auto_paused, cpu_cores, memory_mb, disk_gb, pids, "
                    "env, ports, created_at, updated_at, last_active_at) VALUES ('in-pg', 'stopped', "
                    "false, 1.0, 512, 1.0, 64, '{}', '[]', now(), now(), now())"
                )
            )
        old.dispose()
        db = Database(pg_url)
        db.create_all()
        with db.engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
        with db.session() as s:
            inst = s.get(Instance, "in-pg")
            assert inst is not None and inst.isolation == "runc" and inst.pids == 64
            fn = s.get(Function, "old-pg")
            assert fn is not None and fn.invocation_count == 3
            assert fn.namespace == "openfaas-fn" and inst.namespace == "openfaas-fn"
        db.dispose()
    finally:
        _drop_everything(old)
        old.dispose()


def test_newer_schema_revision_is_refused_on_postgres(pg_db: Database, pg_url: str) -> None:
    from sqlalchemy import text

    from faasd.errors import StateVersionError
    from faasd.state.migrate import head_revision

    with pg_db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    newer = Database(pg_url)
    with pytest.raises(StateVersionError) as err:
        newer.create_all()
    assert "0999" in err.value.message and head_revision() in err.value.message
    assert "postgresql" in err.value.message
    newer.dispose()
