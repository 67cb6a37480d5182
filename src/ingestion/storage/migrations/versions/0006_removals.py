"""Removed pairs: what `accounts remove`, `users forget` and a product-side disconnect stop.

`ingestion_removals` holds one row per (user, provider) the service stopped syncing, with when
its delivered records are to be purged and whether that finished, so an interrupted purge
resumes. Better Auth tables are not touched.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingestion_removals",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("purge_after", sa.DateTime(), nullable=True),
        sa.Column("settled_at", sa.DateTime(), nullable=True),
        sa.Column("purged", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("account_ref", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ingestion_removals")
