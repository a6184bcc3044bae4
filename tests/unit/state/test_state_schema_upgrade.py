"""A database written by an older faasd (tables without the newer columns) keeps working: create_all adds
the missing columns with their defaults, and the old rows read back with those defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, text

from faasd.errors import RuntimeFailure
from faasd.state.db import Database
from faasd.state.instance_models import Instance


def _old_database(path: Path) -> str:
    url = f"sqlite:///{path}"
    db = Database(url)
    db.create_all()
    with db.engine.begin() as conn:  # what instances looked like before pids/isolation existed
        conn.execute(text("ALTER TABLE instances DROP COLUMN pids"))
        conn.execute(text("ALTER TABLE instances DROP COLUMN isolation"))
        conn.execute(
            text(
                "INSERT INTO instances (id, status, auto_paused, cpu_cores, memory_mb, disk_gb, env, ports, "
                "created_at, updated_at, last_active_at) VALUES ('in-old', 'stopped', 0, 1.0, 512, 1.0, "
                "'{}', '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    db.dispose()
    return url


def test_missing_columns_are_added_with_their_defaults(tmp_path: Path) -> None:
    db = Database(_old_database(tmp_path / "old.db"))
    assert sorted(db._add_missing_columns()) == ["instances.isolation", "instances.pids"]
    assert db._add_missing_columns() == []  # idempotent
    with db.session() as s:
        inst = s.get(Instance, "in-old")
        assert inst is not None and inst.pids == 4096 and inst.isolation == "runc"
    db.dispose()


def test_create_all_upgrades_an_old_database(tmp_path: Path) -> None:
    db = Database(_old_database(tmp_path / "old.db"))
    db.create_all()
    with db.session() as s:
        inst = s.get(Instance, "in-old")
        assert inst is not None and inst.isolation == "runc"
    db.dispose()


def test_a_required_column_without_default_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.create_all()
    md = MetaData()
    Table("instances", md, Column("id", Integer, primary_key=True), Column("needed", Integer, nullable=False))
    monkeypatch.setattr("faasd.state.db.Base.metadata", md)
    with pytest.raises(RuntimeFailure, match=r"instances\.needed.*needs a migration"):
        db._add_missing_columns()
    db.dispose()
