"""Persistent state: SQLAlchemy 2 models and the database handle (SQLite default, PostgreSQL by URL)."""

from faasd.state.db import Database
from faasd.state.models import ApiKey, Base, Execution, Function, FunctionAddress, LogLine, Secret

__all__ = ["ApiKey", "Base", "Database", "Execution", "Function", "FunctionAddress", "LogLine", "Secret"]
