"""Baseline: the schema of faasd when Alembic was introduced.

A database created before Alembic (tables, no ``alembic_version``) is adopted by this revision: tables
it lacks are created, columns it lacks are added (existing rows get the default in ``_fill``), missing
indexes are created; its rows are kept. On an empty database it simply creates every table.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fill(value: Any) -> dict[str, Any]:
    """Server default for existing rows when a pre-Alembic table lacks this (NOT NULL) column."""
    return {"fill": value}


def _api_keys() -> list[Any]:
    return [
        sa.Column("id", sa.String(16), primary_key=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.JSON(), nullable=False, info=_fill("[]")),
        sa.Column("rate_limit_rps", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _executions() -> list[Any]:
    return [
        sa.Column("id", sa.String(40), primary_key=True, nullable=False),
        sa.Column("function", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False, info=_fill("sync")),
        sa.Column("status", sa.String(16), nullable=False, info=_fill("queued")),
        sa.Column("request_body", sa.LargeBinary(), nullable=True),
        sa.Column("request_truncated", sa.Boolean(), nullable=False, info=_fill(sa.false())),
        sa.Column("request_headers", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("request_path", sa.String(1024), nullable=False, info=_fill("/")),
        sa.Column("request_method", sa.String(8), nullable=False, info=_fill("POST")),
        sa.Column("request_query", sa.Text(), nullable=False, info=_fill("")),
        sa.Column("result_body", sa.LargeBinary(), nullable=True),
        sa.Column("result_truncated", sa.Boolean(), nullable=False, info=_fill(sa.false())),
        sa.Column("result_headers", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stdout", sa.Text(), nullable=False, info=_fill("")),
        sa.Column("stderr", sa.Text(), nullable=False, info=_fill("")),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("init_ms", sa.Float(), nullable=True),
        sa.Column("wait_ms", sa.Float(), nullable=True),
        sa.Column("run_ms", sa.Float(), nullable=True),
        sa.Column("cold_start", sa.Boolean(), nullable=True),
        sa.Column("callback_url", sa.String(2048), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, info=_fill(sa.text("0"))),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        # index ix_executions_function_created ["function", "created_at"] unique=False
        # index ix_executions_status_created ["status", "created_at"] unique=False
    ]


def _function_addresses() -> list[Any]:
    return [
        sa.Column("function", sa.String(63), primary_key=True, nullable=False),
        sa.Column("address", sa.String(15), nullable=False, unique=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
    ]


def _functions() -> list[Any]:
    return [
        sa.Column("name", sa.String(63), primary_key=True, nullable=False),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("runtime", sa.String(16), nullable=False, info=_fill("python")),
        sa.Column("handler", sa.String(256), nullable=True),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("secrets", sa.JSON(), nullable=False, info=_fill("[]")),
        sa.Column("memory_mb", sa.Integer(), nullable=False, info=_fill(sa.text("256"))),
        sa.Column("cpu_cores", sa.Float(), nullable=False, info=_fill(sa.text("1.0"))),
        sa.Column("pids", sa.Integer(), nullable=False, info=_fill(sa.text("256"))),
        sa.Column("timeout_s", sa.Float(), nullable=False, info=_fill(sa.text("30.0"))),
        sa.Column("disk_mb", sa.Integer(), nullable=False, info=_fill(sa.text("1024"))),
        sa.Column("scale_min", sa.Integer(), nullable=False, info=_fill(sa.text("0"))),
        sa.Column("scale_max", sa.Integer(), nullable=False, info=_fill(sa.text("4"))),
        sa.Column("concurrency", sa.Integer(), nullable=False, info=_fill(sa.text("1"))),
        sa.Column("queue_size", sa.Integer(), nullable=False, info=_fill(sa.text("100"))),
        sa.Column("idle_ttl_s", sa.Float(), nullable=False, info=_fill(sa.text("300.0"))),
        sa.Column("mode", sa.String(16), nullable=False, info=_fill("cached")),
        sa.Column("labels", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("annotations", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("invocation_count", sa.Integer(), nullable=False, info=_fill(sa.text("0"))),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
    ]


def _instances() -> list[Any]:
    return [
        sa.Column("id", sa.String(40), primary_key=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("image", sa.String(512), nullable=True),
        sa.Column("source_snapshot", sa.String(64), nullable=True),
        sa.Column("fs_snapshot", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, info=_fill("starting")),
        sa.Column("auto_paused", sa.Boolean(), nullable=False, info=_fill(sa.false())),
        sa.Column("sandbox_id", sa.String(64), nullable=True),
        sa.Column("cpu_cores", sa.Float(), nullable=False, info=_fill(sa.text("1.0"))),
        sa.Column("memory_mb", sa.Integer(), nullable=False, info=_fill(sa.text("512"))),
        sa.Column("disk_gb", sa.Float(), nullable=False, info=_fill(sa.text("1.0"))),
        sa.Column("pids", sa.Integer(), nullable=False, info=_fill(sa.text("4096"))),
        sa.Column("isolation", sa.String(16), nullable=False, info=_fill("runc")),
        sa.Column("ttl_s", sa.Float(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("ports", sa.JSON(), nullable=False, info=_fill("[]")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column(
            "last_active_at",
            sa.DateTime(timezone=True),
            nullable=False,
            info=_fill(sa.func.current_timestamp()),
        ),
    ]


def _jobs() -> list[Any]:
    return [
        sa.Column("id", sa.String(40), primary_key=True, nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("type_name", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, info=_fill("running")),
        sa.Column("args", sa.JSON(), nullable=False, info=_fill("{}")),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _secrets() -> list[Any]:
    return [
        sa.Column("name", sa.String(253), primary_key=True, nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
    ]


def _log_lines() -> list[Any]:
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("function", sa.String(63), nullable=False),
        sa.Column(
            "execution_id", sa.String(40), sa.ForeignKey("executions.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("instance", sa.String(64), nullable=True),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "timestamp", sa.DateTime(timezone=True), nullable=False, info=_fill(sa.func.current_timestamp())
        ),
        # index ix_log_lines_function_id ["function", "id"] unique=False
    ]


_TABLES: list[tuple[str, Callable[[], list[Any]], list[tuple[str, list[str]]]]] = [
    ("api_keys", _api_keys, []),
    (
        "executions",
        _executions,
        [
            ("ix_executions_function_created", ["function", "created_at"]),
            ("ix_executions_status_created", ["status", "created_at"]),
        ],
    ),
    ("function_addresses", _function_addresses, []),
    ("functions", _functions, []),
    ("instances", _instances, []),
    ("jobs", _jobs, []),
    ("secrets", _secrets, []),
    ("log_lines", _log_lines, [("ix_log_lines_function_id", ["function", "id"])]),
]


def _add_column(table: str, column: sa.Column[Any]) -> None:
    if not column.nullable:
        fill = column.info.get("fill")
        if fill is None:
            raise RuntimeError(
                f"the database lacks column {table}.{column.name}, which has no default for existing rows"
            )
        column.server_default = sa.DefaultClause(fill)  # SQLite needs it for NOT NULL; PostgreSQL fills rows
    op.add_column(table, column)


def upgrade() -> None:
    insp = sa.inspect(op.get_bind())
    existing = set(insp.get_table_names())
    for name, columns, indexes in _TABLES:
        if name not in existing:
            op.create_table(name, *columns())
            have_ix: set[str] = set()
        else:
            have = {c["name"] for c in insp.get_columns(name)}
            for column in columns():
                if column.name not in have:
                    _add_column(name, column)
            have_ix = {str(ix["name"]) for ix in insp.get_indexes(name)}
        for ix_name, ix_columns in indexes:
            if ix_name not in have_ix:
                op.create_index(ix_name, name, ix_columns)


def downgrade() -> None:
    for name, _columns, _indexes in reversed(_TABLES):
        op.drop_table(name)
