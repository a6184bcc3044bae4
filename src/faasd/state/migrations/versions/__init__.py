"""Alembic revisions, oldest first by ``down_revision``; ``0001`` is the schema of faasd before Alembic."""
