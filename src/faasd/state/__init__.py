"""Persistent state: SQLAlchemy 2 models and the database handle (SQLite default, PostgreSQL by URL)."""

from faasd.state.db import Database
from faasd.state.models import (
    DEFAULT_NAMESPACE,
    ApiKey,
    Base,
    Execution,
    Function,
    FunctionAddress,
    LogLine,
    Namespace,
    Secret,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "ApiKey",
    "Base",
    "Database",
    "Execution",
    "Function",
    "FunctionAddress",
    "LogLine",
    "Namespace",
    "Secret",
]
