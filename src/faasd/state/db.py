"""Database handle: engine from ``Settings.db_url``, session factory, schema creation.

SQLite (default) runs in WAL mode with a busy timeout so the API and the background execution loop
can write concurrently; PostgreSQL is used through psycopg 3 (``postgresql+psycopg://...``; a plain
``postgresql://`` URL is rewritten to the psycopg 3 driver).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from faasd.errors import RuntimeFailure
from faasd.state.models import Base


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """Owns the engine and hands out sessions (``with db.session() as s: ...`` commits on success)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = _normalise_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            db_path = parsed.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                if not Path(db_path).exists():
                    # Created with 0600: secrets and key hashes live here.
                    fd = os.open(db_path, os.O_CREAT | os.O_WRONLY, 0o600)
                    os.close(fd)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._before_session: list[Callable[[], None]] = []

    def add_before_session(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before every :meth:`session` is handed out (write-behind buffers flush there, so
        whatever reads through a session sees every write queued before it). Hooks must not raise."""
        self._before_session.append(hook)

    def remove_before_session(self, hook: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._before_session.remove(hook)

    def create_all(self) -> None:
        """Create missing tables, then add the columns a newer faasd added to existing tables."""
        try:
            Base.metadata.create_all(self.engine)
            self._add_missing_columns()
        except OperationalError as exc:
            raise RuntimeFailure(
                f"cannot open the database at {make_url(self.url).render_as_string(hide_password=True)}: "
                f"{exc.orig}; check FAASD_DATABASE_URL and that the server is reachable"
            ) from exc

    def _add_missing_columns(self) -> list[str]:
        """Additive schema upgrades: a column the models have and an existing table lacks is added with its
        scalar default (a database written by an older faasd keeps working). Returns ``table.column``
        names added. Anything else (renames, type changes) needs a real migration."""
        added: list[str] = []
        insp = inspect(self.engine)
        existing_tables = set(insp.get_table_names())
        with self.engine.begin() as conn:
            for table in Base.metadata.sorted_tables:
                if table.name not in existing_tables:
                    continue
                have = {c["name"] for c in insp.get_columns(table.name)}
                for col in table.columns:
                    if col.name in have:
                        continue
                    kind = col.type.compile(self.engine.dialect)
                    ddl = f"ALTER TABLE {table.name} ADD COLUMN {col.name} {kind}"
                    default = col.default.arg if isinstance(col.default, ScalarElementColumnDefault) else None
                    if default is not None:
                        ddl += " DEFAULT " + _literal(default)
                        if not col.nullable:
                            ddl += " NOT NULL"
                    elif not col.nullable:
                        raise RuntimeFailure(
                            f"the database lacks column {table.name}.{col.name}, which has no default to "
                            "fill existing rows with: this upgrade needs a migration"
                        )
                    conn.execute(text(ddl))
                    added.append(f"{table.name}.{col.name}")
        return added

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
        self.engine.dispose()


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise RuntimeFailure(f"cannot write the default {value!r} into a schema upgrade")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
