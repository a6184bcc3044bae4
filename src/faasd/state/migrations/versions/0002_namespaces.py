"""Namespaces (tenants): the ``namespaces`` table and a ``namespace`` column on what a namespace owns.

Existing functions, secrets, instances and jobs land in the default namespace ``openfaas-fn`` (filled in
for existing rows); existing API keys get no namespace (NULL: they act in every namespace, as before).
Executions, log lines and snapshots need no column: their namespace is their function's (the function id
``name.namespace``) or a snapshot label.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_NAMESPACE = "openfaas-fn"
_OWNED = ("functions", "secrets", "instances", "jobs")


def upgrade() -> None:
    insp = sa.inspect(op.get_bind())
    if "namespaces" not in insp.get_table_names():
        op.create_table(
            "namespaces",
            sa.Column("name", sa.String(63), primary_key=True, nullable=False),
            sa.Column("max_sandboxes", sa.Integer(), nullable=True),
            sa.Column("max_memory_mb", sa.Integer(), nullable=True),
            sa.Column("max_disk_mb", sa.Integer(), nullable=True),
            sa.Column("max_snapshots", sa.Integer(), nullable=True),
            sa.Column("labels", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    for table in _OWNED:
        if "namespace" not in {c["name"] for c in insp.get_columns(table)}:
            op.add_column(
                table,
                sa.Column(
                    "namespace",
                    sa.String(63),
                    nullable=False,
                    server_default=sa.DefaultClause(DEFAULT_NAMESPACE),  # fills existing rows
                ),
            )
    if "namespace" not in {c["name"] for c in insp.get_columns("api_keys")}:
        op.add_column("api_keys", sa.Column("namespace", sa.String(63), nullable=True))


def downgrade() -> None:
    for table in (*_OWNED, "api_keys"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("namespace")
    op.drop_table("namespaces")
