"""The real daemon at start-up: a data dir and database an older faasd left (no VERSION, no
alembic_version) are upgraded and their rows served; a newer layout or schema revision stops the daemon
with a clear message (exit status 2) and leaves the state untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text

import faasd.state.instance_models  # noqa: F401  (the full metadata)
from faasd.config import Settings
from faasd.state.db import Database
from faasd.state.layout import DATA_LAYOUT, RUN_LAYOUT, read_version
from faasd.state.migrate import current_revisions, head_revision
from faasd.state.models import Base, Function
from faasd.testing.server import free_port, remove_direct_addresses


def _daemon(settings: Settings, log: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "faasd.daemon", "--host", "127.0.0.1", "--port", str(port), "--no-auth",
         "--data-dir", str(settings.data_dir), "--run-dir", str(settings.run_dir),
         "--cache-dir", str(settings.cache_dir), "--base-images", "none"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "FAASD_DIRECT_POOL": settings.direct_pool},
    )  # fmt: skip


def _refused(settings: Settings, tmp_path: Path) -> str:
    log = tmp_path / "daemon.log"
    proc = _daemon(settings, log, free_port())
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = log.read_text()
    assert code == 2, out[-3000:]
    assert "faasd cannot start" in out and "Traceback" not in out, out[-3000:]
    return out


def test_daemon_upgrades_state_an_older_faasd_left(settings: Settings, tmp_path: Path) -> None:
    db = Database(settings.db_url)
    Base.metadata.create_all(db.engine)  # how faasd made databases before Alembic
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE instances DROP COLUMN isolation"))
    with db.session() as s:
        s.add(Function(name="from-before", image="faasd/python:latest", invocation_count=41))
    db.dispose()
    log, port = tmp_path / "daemon.log", free_port()
    proc = _daemon(settings, log, port)
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and body is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/functions/from-before", timeout=2)
                body = r.json() if r.status_code == 200 else None
            except httpx.HTTPError:
                time.sleep(0.3)
        assert body is not None, log.read_text()[-3000:]
        assert body["name"] == "from-before" and body["invocation_count"] == 41
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        remove_direct_addresses(settings.direct_pool)
    assert read_version(settings.data_dir) is not None and read_version(settings.data_dir)[0] == DATA_LAYOUT
    assert read_version(settings.run_dir) is not None and read_version(settings.run_dir)[0] == RUN_LAYOUT
    db = Database(settings.db_url)
    with db.engine.connect() as conn:
        assert current_revisions(conn) == (head_revision(),)
    db.dispose()
    assert "schema upgraded from none to revision" in log.read_text()


def test_daemon_refuses_a_newer_data_dir_layout(settings: Settings, tmp_path: Path) -> None:
    version = json.dumps({"layout": DATA_LAYOUT + 1, "faasd": "99.0.0"})
    (settings.data_dir / "VERSION").write_text(version)
    out = _refused(settings, tmp_path)
    assert f"layout version {DATA_LAYOUT + 1}, written by faasd 99.0.0" in out
    assert (settings.data_dir / "VERSION").read_text() == version
    assert not (settings.data_dir / "faasd.db").exists()  # checked before the database is opened


def test_daemon_refuses_a_database_from_a_newer_faasd(settings: Settings, tmp_path: Path) -> None:
    db = Database(settings.db_url)
    db.create_all()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    db.dispose()
    out = _refused(settings, tmp_path)
    assert "schema revision 0999" in out and f"up to {head_revision()}" in out
