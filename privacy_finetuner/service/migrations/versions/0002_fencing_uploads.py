"""fenced job attempts, idempotent submissions, uploaded data set statistics, key expiry

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pf_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            "uq_pf_jobs_tenant_idempotency_key", ["tenant", "idempotency_key"]
        )
    with op.batch_alter_table("pf_datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upload_stats", sa.JSON(), nullable=True))
    with op.batch_alter_table("pf_api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pf_api_keys", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("pf_datasets", schema=None) as batch_op:
        batch_op.drop_column("upload_stats")
    with op.batch_alter_table("pf_jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_pf_jobs_tenant_idempotency_key", type_="unique")
        batch_op.drop_column("request_sha256")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("attempt_token")
