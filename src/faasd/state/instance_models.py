"""Tables of persistent instances and jobs (on the shared :class:`faasd.state.models.Base`).

Importing this module registers the tables, so ``Database.create_all()`` creates them; the platform's
instance and job services import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from faasd.state.models import DEFAULT_NAMESPACE, Base, utcnow


class Instance(Base):
    """A long-running sandbox whose filesystem survives stop/start (as a chain of snapshot uppers)."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), default=DEFAULT_NAMESPACE)
    name: Mapped[str | None] = mapped_column(String(128), default=None)
    image: Mapped[str | None] = mapped_column(String(512), default=None)
    source_snapshot: Mapped[str | None] = mapped_column(String(64), default=None)
    """Snapshot the instance was first started from (None: started from ``image``)."""
    fs_snapshot: Mapped[str | None] = mapped_column(String(64), default=None)
    """Top of the snapshot chain its filesystem is layered on (advanced at each stop)."""
    status: Mapped[str] = mapped_column(String(16), default="starting")
    """starting | running | paused | stopped | error."""
    auto_paused: Mapped[bool] = mapped_column(default=False)
    sandbox_id: Mapped[str | None] = mapped_column(String(64), default=None)
    cpu_cores: Mapped[float] = mapped_column(Float, default=1.0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=512)
    disk_gb: Mapped[float] = mapped_column(Float, default=1.0)
    pids: Mapped[int] = mapped_column(Integer, default=4096)
    """Max processes+threads of its sandbox: a fork bomb in an exec ends that exec as ``pids_exhausted``."""
    isolation: Mapped[str] = mapped_column(String(16), default="runc")
    """``runc`` or ``gvisor`` (its sandbox runs under runsc)."""
    ttl_s: Mapped[float | None] = mapped_column(Float, default=None)
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ports: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """[{"internal_port", "protocol", "subdomain", "host_port", "url"}]."""
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_active_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One run of a typed job (``POST /api/v1/jobs``): its arguments and its result."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), default=DEFAULT_NAMESPACE)
    type: Mapped[int] = mapped_column(Integer)
    type_name: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    """running | succeeded | failed."""
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
