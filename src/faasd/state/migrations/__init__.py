"""Alembic migrations of faasd's database schema (shipped inside the package; run by
:mod:`faasd.state.migrate`). Add a revision with ``python -m faasd.state.migrate revision -m "what"``."""
