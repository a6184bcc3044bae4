"""Database handle: engine from ``Settings.db_url``, session factory, schema creation.

SQLite (default) runs in WAL mode with a busy timeout so the API and the background execution loop
can write concurrently. The daemon's handle (``background_checkpoint=True``) moves WAL checkpoints (the
copy of committed pages into the database file, with its fsyncs) off the writers: SQLite otherwise runs
one inside whichever commit crosses 1000 WAL pages, on the event loop's thread (~25 us of every execution
record's ~50 us write, measured); a thread (:class:`Checkpointer`) does it every second. PostgreSQL is
used through psycopg 3 (``postgresql+psycopg://...``; a plain
``postgresql://`` URL is rewritten to the psycopg 3 driver).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from faasd.errors import RuntimeFailure

log = logging.getLogger("faasd.state")


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """Owns the engine and hands out sessions (``with db.session() as s: ...`` commits on success)."""

    def __init__(self, url: str, *, echo: bool = False, background_checkpoint: bool = False) -> None:
        self.url = _normalise_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        db_path = parsed.database if self.is_sqlite and parsed.database != ":memory:" else None
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if db_path:
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                if not Path(db_path).exists():
                    # Created with 0600: secrets and key hashes live here.
                    fd = os.open(db_path, os.O_CREAT | os.O_WRONLY, 0o600)
                    os.close(fd)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        self._checkpointer: Checkpointer | None = None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            if background_checkpoint and db_path:
                event.listen(self.engine, "connect", _no_autocheckpoint)
                self._checkpointer = Checkpointer(db_path)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._before_session: list[Callable[[], None]] = []
        self._migrated = False

    def add_before_session(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before every :meth:`session` is handed out (write-behind buffers flush there, so
        whatever reads through a session sees every write queued before it). Hooks must not raise."""
        self._before_session.append(hook)

    def remove_before_session(self, hook: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._before_session.remove(hook)

    def create_all(self) -> None:
        """Bring the schema to this faasd's newest revision (:func:`faasd.state.migrate.upgrade`): creates
        the tables of a new database, adopts one made before Alembic keeping its rows, runs the revisions
        after an older one, and refuses one written by a newer faasd (:class:`StateVersionError`). Done
        once per handle."""
        if self._migrated:
            return
        from faasd.state.migrate import newest_revision, upgrade

        where = make_url(self.url).render_as_string(hide_password=True)
        try:
            before = upgrade(self.engine, where=where)
        except OperationalError as exc:
            raise RuntimeFailure(
                f"cannot open the database at {where}: {exc.orig}; check FAASD_DATABASE_URL and that the "
                "server is reachable"
            ) from exc
        if before is not None:
            log.info(
                "database %s: schema upgraded from %s to revision %s",
                where,
                before or "none",
                newest_revision(),
            )
        self._migrated = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        for hook in self._before_session:
            hook()
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


CHECKPOINT_INTERVAL_S = 1.0
FINAL_CHECKPOINT_WAIT_S = 2.0
WAL_SIZE_LIMIT = 64 << 20
"""After a checkpoint, SQLite truncates a WAL file larger than this (``journal_size_limit``)."""


class Checkpointer:
    """Checkpoints a SQLite database's WAL from its own thread and connection, every
    :data:`CHECKPOINT_INTERVAL_S` and once more on :meth:`stop` (TRUNCATE: the WAL file is emptied when
    the daemon stops cleanly). PASSIVE checkpoints never wait for readers or writers; a crash between two
    leaves committed frames in the WAL, which SQLite replays on the next open (nothing is lost)."""

    def __init__(self, path: str, *, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faasd-wal-checkpoint", daemon=True)
        self._thread.start()

    def _connect(self, timeout: float = 30.0) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.interval_s):
            try:
                conn = conn or self._connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # the next round tries again; a stuck WAL only grows
                log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        """Stop the thread and checkpoint everything (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            conn = self._connect(timeout=FINAL_CHECKPOINT_WAIT_S)  # a reader elsewhere: do not hang a stop
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("final WAL checkpoint of %s failed: %s", self.path, exc)
