"""Schema versions (Alembic): a new database is created at head and matches the models; a database made
before Alembic (tables, no ``alembic_version``) is adopted keeping its rows; an older revision is upgraded;
a revision from a newer faasd is refused with both revisions named, nothing changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import faasd.state.instance_models  # noqa: F401  (the full metadata)
from faasd.errors import StateVersionError
from faasd.state import migrate
from faasd.state.db import Database
from faasd.state.instance_models import Instance, Job
from faasd.state.migrate import current_revisions, head_revision
from faasd.state.models import Base, Function


def _revisions(db: Database) -> tuple[str, ...]:
    with db.engine.connect() as conn:
        return current_revisions(conn)


def _pre_alembic_database(path: Path) -> str:
    """What an older faasd left: ``metadata.create_all`` tables (instances without pids/isolation, no jobs
    table, no executions index), rows in them, no alembic_version."""
    url = f"sqlite:///{path}"
    db = Database(url)
    Base.metadata.create_all(db.engine)
    with db.session() as s:
        s.add(Function(name="old-fn", image="python:3", invocation_count=7))
    with db.engine.begin() as conn:
        for table in ("functions", "secrets", "api_keys", "instances", "jobs"):  # before namespaces
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN namespace"))
        conn.execute(text("DROP TABLE namespaces"))
        conn.execute(text("ALTER TABLE instances DROP COLUMN pids"))
        conn.execute(text("ALTER TABLE instances DROP COLUMN isolation"))
        conn.execute(text("DROP TABLE jobs"))
        conn.execute(text("DROP INDEX ix_executions_status_created"))
        conn.execute(
            text(
                "INSERT INTO instances (id, status, auto_paused, cpu_cores, memory_mb, disk_gb, env, ports, "
                "created_at, updated_at, last_active_at) VALUES ('in-old', 'stopped', 0, 1.0, 512, 1.0, "
                "'{}', '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    db.dispose()
    return url


def test_a_new_database_is_at_head_and_matches_the_models(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'new.db'}")
    db.create_all()
    assert _revisions(db) == (head_revision(),)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"the models differ from the migrations (add a revision): {diff}"
    db.dispose()


def test_the_revisions_build_the_schema_of_the_models(tmp_path: Path) -> None:
    """A new database is created from the models and stamped; the revisions must build the same schema
    (else: add a revision for the model change)."""
    db = Database(f"sqlite:///{tmp_path / 'by-revisions.db'}")
    assert migrate.upgrade(db.engine, where="test", fresh_from_models=False) == ()
    assert _revisions(db) == (head_revision(),)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"the revisions differ from the models (add a revision): {diff}"
    assert migrate.upgrade(db.engine, where="test") is None  # at head: nothing to do
    db.dispose()


def test_a_pre_alembic_database_is_adopted_keeping_its_rows(tmp_path: Path) -> None:
    db = Database(_pre_alembic_database(tmp_path / "old.db"))
    assert _revisions(db) == ()
    db.create_all()
    assert _revisions(db) == (head_revision(),)
    with db.session() as s:
        inst = s.get(Instance, "in-old")
        assert inst is not None and inst.pids == 4096 and inst.isolation == "runc"
        fn = s.get(Function, "old-fn")
        assert fn is not None and fn.invocation_count == 7 and fn.image == "python:3"
        assert fn.namespace == "openfaas-fn" and inst.namespace == "openfaas-fn"  # the default namespace
        s.add(Job(id="j1", type=1, type_name="snapshot"))  # the table it lacked now exists
    indexes = {ix["name"] for ix in inspect(db.engine).get_indexes("executions")}
    assert "ix_executions_status_created" in indexes
    db.dispose()
    again = Database(db.url)  # a second start: nothing to do, rows still there
    again.create_all()
    with again.session() as s:
        assert s.get(Job, "j1") is not None
    again.dispose()


def test_a_database_from_a_newer_faasd_is_refused_untouched(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    db = Database(url)
    db.create_all()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
        conn.execute(text("ALTER TABLE functions ADD COLUMN from_the_future INTEGER"))
    db.dispose()
    newer = Database(url)
    with pytest.raises(StateVersionError) as err:
        newer.create_all()
    msg = err.value.message
    assert "0999" in msg and head_revision() in msg and "newer faasd" in msg and "never downgrades" in msg
    assert str(tmp_path / "newer.db") in msg
    assert _revisions(newer) == ("0999",)
    assert "from_the_future" in {c["name"] for c in inspect(newer.engine).get_columns("functions")}
    newer.dispose()


@pytest.fixture
def scratch_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped migrations to add revisions to (the package's stay untouched)."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPT_LOCATION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", copy)
    migrate._script.cache_clear()
    yield copy
    migrate._script.cache_clear()


def test_an_older_revision_runs_the_revisions_after_it(tmp_path: Path, scratch_migrations: Path) -> None:
    url = f"sqlite:///{tmp_path / 'older.db'}"
    db = Database(url)
    db.create_all()  # at the shipped head
    before = head_revision()
    after = f"{int(before) + 1:04d}"
    with db.session() as s:
        s.add(Function(name="kept", image="img"))
    db.dispose()
    path = migrate.new_revision("add functions.probe", autogenerate=False)  # the documented command
    assert path.parent == scratch_migrations / "versions" and path.name.startswith(f"{after}_")
    source = path.read_text()
    assert f"down_revision: str | None = '{before}'" in source
    path.write_text(
        source.replace(
            "def upgrade() -> None:\n    pass",
            "def upgrade() -> None:\n"
            "    op.add_column('functions', sa.Column('probe', sa.Integer(), server_default='5'))",
        )
    )
    migrate._script.cache_clear()
    assert head_revision() == after
    upgraded = Database(url)
    upgraded.create_all()
    assert _revisions(upgraded) == (after,)
    with upgraded.engine.connect() as conn:
        assert conn.execute(text("SELECT name, probe FROM functions")).all() == [("kept", 5)]
    upgraded.dispose()


def test_the_revision_command_autogenerates_nothing_while_models_match(scratch_migrations: Path) -> None:
    path = migrate.new_revision("nothing changed")
    body = path.read_text().split("def upgrade() -> None:", 1)[1].split("def downgrade", 1)[0]
    assert "op." not in body and "pass" in body, f"the models differ from the migrations: {body}"


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert migrate._head_from_files(migrate.SCRIPT_LOCATION) == head_revision()


def test_new_and_up_to_date_databases_are_opened_without_importing_alembic(tmp_path: Path) -> None:
    """The daemon's start on a new or an up-to-date database does not load Alembic (~10 MB of memory)."""
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'head.db'}"
    src = Path(migrate.__file__).parents[2]
    code = (
        "import sys\nfrom faasd.state.db import Database\nfrom faasd.state.models import Function\n"
        f"db = Database({url!r}); db.create_all()\n"
        "with db.session() as s: s.add(Function(name='f', image='i'))\n"
        "with db.session() as s: assert s.get(Function, 'f') is not None\n"
        "print('alembic' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for _start in ("new", "at head"):
        argv = [sys.executable, "-c", code]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert out.stdout.strip() == "False", out.stdout + out.stderr
        code = code.replace("s.add(Function(name='f', image='i'))", "pass")
    db = Database(url)
    assert _revisions(db) == (head_revision(),)
    db.dispose()
