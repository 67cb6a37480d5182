"""Push channels: Gmail watches and Calendar watch channels (`ingestion_push_channels`).

Revision ID: 000d
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "000d"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingestion_push_channels",
        sa.Column("channel_id", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("resource", sa.String(512), nullable=False),
        sa.Column("resource_id", sa.String(512), nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.Column("expiration", sa.DateTime(), nullable=True),
        sa.Column("history_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("renewed_at", sa.DateTime(), nullable=False),
        sa.Column("last_message_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "ix_ingestion_push_channels_user", "ingestion_push_channels", ["provider", "user_id"]
    )
    op.create_index(
        "ix_ingestion_push_channels_resource", "ingestion_push_channels", ["provider", "resource"]
    )


def downgrade() -> None:
    op.drop_index("ix_ingestion_push_channels_resource", "ingestion_push_channels")
    op.drop_index("ix_ingestion_push_channels_user", "ingestion_push_channels")
    op.drop_table("ingestion_push_channels")
