"""Typed SQLAlchemy 2 models. JSON columns hold small dicts/lists (env, limits, labels, scopes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """A stored time as the API shows it: ISO 8601 in UTC with a ``Z`` (None stays None)."""
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


DEFAULT_NAMESPACE = "openfaas-fn"
"""The namespace of everything created without one (and of every row written before namespaces existed):
OpenFaaS's default function namespace, so ``faas-cli`` and ``/function/<name>.openfaas-fn`` keep working."""

INT_COLUMN_MAX = 2**31 - 1
"""The largest number an ``Integer`` column holds on every backend (32-bit on PostgreSQL; SQLite refuses
what does not fit 64 bits): the bound of API fields stored in one, so a larger number is a 422, not a 500
from the database."""

KEY_LENGTH = 63
"""Length of columns holding a function id: ``name`` in the default namespace, ``name.namespace``
elsewhere (so outside the default namespace, name + namespace fit in 62 characters)."""
SECRET_KEY_LENGTH = 253
"""Length of a secret's id: ``name``, or ``namespace/name`` outside the default namespace."""


class Namespace(Base):
    """A tenant: it owns functions, secrets, snapshots, instances, executions and jobs; quotas bound it.

    A quota of None is unlimited."""

    __tablename__ = "namespaces"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    max_sandboxes: Mapped[int | None] = mapped_column(Integer, default=None)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    max_disk_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    max_snapshots: Mapped[int | None] = mapped_column(Integer, default=None)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Function(Base):
    __tablename__ = "functions"

    name: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    """The function's id: its name in the default namespace, ``<name>.<namespace>`` in any other
    (function names have no dots, so the id is unambiguous; it is also OpenFaaS's address)."""
    namespace: Mapped[str] = mapped_column(String(63), default=DEFAULT_NAMESPACE)
    image: Mapped[str] = mapped_column(String(512))
    runtime: Mapped[str] = mapped_column(String(16), default="python")
    handler: Mapped[str | None] = mapped_column(String(256), default=None)
    command: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[list[str]] = mapped_column(JSON, default=list)
    memory_mb: Mapped[int] = mapped_column(Integer, default=256)
    cpu_cores: Mapped[float] = mapped_column(Float, default=1.0)
    pids: Mapped[int] = mapped_column(Integer, default=256)
    timeout_s: Mapped[float] = mapped_column(Float, default=30.0)
    disk_mb: Mapped[int] = mapped_column(Integer, default=1024)
    scale_min: Mapped[int] = mapped_column(Integer, default=0)
    scale_max: Mapped[int] = mapped_column(Integer, default=4)
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    queue_size: Mapped[int] = mapped_column(Integer, default=100)
    idle_ttl_s: Mapped[float] = mapped_column(Float, default=300.0)
    mode: Mapped[str] = mapped_column(String(16), default="cached")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    invocation_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_status_created", "status", "created_at"),
        Index("ix_executions_function_created", "function", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    function: Mapped[str] = mapped_column(String(KEY_LENGTH))
    """The function's id (``name`` or ``name.namespace``): the execution's namespace is the function's."""
    kind: Mapped[str] = mapped_column(String(8), default="sync")  # sync | async | stream
    status: Mapped[str] = mapped_column(String(16), default="queued")
    request_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    request_truncated: Mapped[bool] = mapped_column(default=False)
    request_headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_path: Mapped[str] = mapped_column(String(1024), default="/")
    request_method: Mapped[str] = mapped_column(String(8), default="POST")
    request_query: Mapped[str] = mapped_column(Text, default="")
    result_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    result_truncated: Mapped[bool] = mapped_column(default=False)
    result_headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    init_ms: Mapped[float | None] = mapped_column(Float, default=None)
    wait_ms: Mapped[float | None] = mapped_column(Float, default=None)
    run_ms: Mapped[float | None] = mapped_column(Float, default=None)
    cold_start: Mapped[bool | None] = mapped_column(default=None)
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(default=None)
    """Async executions re-queued after a 429 from their pool are not retried before this."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Secret(Base):
    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(SECRET_KEY_LENGTH), primary_key=True)
    """The secret's id: its name in the default namespace, ``<namespace>/<name>`` in any other (secret
    names may hold dots, never a slash)."""
    namespace: Mapped[str] = mapped_column(String(63), default=DEFAULT_NAMESPACE)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    rate_limit_rps: Mapped[float | None] = mapped_column(Float, default=None)
    burst: Mapped[int | None] = mapped_column(Integer, default=None)
    namespace: Mapped[str | None] = mapped_column(String(63), default=None)
    """The one namespace the key may act in; None: every namespace (keys made before namespaces)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (Index("ix_log_lines_function_id", "function", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    function: Mapped[str] = mapped_column(String(KEY_LENGTH))
    execution_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("executions.id", ondelete="SET NULL"), default=None
    )
    instance: Mapped[str | None] = mapped_column(String(64), default=None)
    stream: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)


class FunctionAddress(Base):
    """Which function holds which direct address (``lo:faas``): the registry of direct addresses.

    A table of its own (not a column of ``functions``) so databases created before direct addresses
    get it from ``create_all`` without a migration."""

    __tablename__ = "function_addresses"

    function: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    address: Mapped[str] = mapped_column(String(15), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
