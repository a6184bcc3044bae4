"""The daemon's database handle checkpoints the SQLite WAL from its own thread, not inside commits."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from faasd.state.db import Checkpointer, Database

pytestmark = pytest.mark.unit


def _wal(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_writers_never_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}", background_checkpoint=True)
    try:
        assert db._checkpointer is not None
        db._checkpointer.interval_s = 0.05
        with db.engine.begin() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
            conn.execute(text("CREATE TABLE t (x BLOB)"))
            conn.execute(text("INSERT INTO t VALUES (:b)"), [{"b": os.urandom(4000)} for _ in range(2000)])
        assert _wal(path) > 4 << 20  # more than SQLite's 1000-page auto-checkpoint: none ran in the commit
        deadline = time.monotonic() + 30
        while db._checkpointer.checkpoints < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert db._checkpointer.checkpoints >= 2
        with sqlite3.connect(path) as raw:  # every frame of the WAL is already in the database file
            busy, frames, done = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            assert busy == 0 and frames == done
    finally:
        db.dispose()
    assert _wal(path) == 0  # stopping truncates the WAL
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM t").fetchone() == (2000,)


def test_a_handle_without_it_keeps_sqlites_autocheckpoint(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert db._checkpointer is None
        with db.engine.begin() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
    finally:
        db.dispose()


def test_stop_is_idempotent_and_survives_a_missing_database(tmp_path: Path) -> None:
    cp = Checkpointer(str(tmp_path / "gone" / "s.db"), interval_s=0.01)
    time.sleep(0.05)  # rounds fail (no such directory): logged, the thread goes on
    cp.stop()
    cp.stop()
    assert not cp._thread.is_alive()
