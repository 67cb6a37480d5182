"""Initial schema: Better Auth user/account (only when absent) and the ingestion tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _exists(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    # Better Auth's tables belong to the product's server: create them only on an empty
    # database (standalone use), never alter them where they already exist.
    if not _exists("user"):
        op.create_table(
            "user",
            sa.Column("id", sa.Text(), primary_key=True),
            sa.Column("name", sa.Text(), nullable=False),
            sa.Column("email", sa.Text(), nullable=False, unique=True),
            sa.Column("emailVerified", sa.Boolean(), nullable=False, server_default=sa.false()),
            sa.Column("image", sa.Text(), nullable=True),
            sa.Column("createdAt", sa.DateTime(), nullable=False),
            sa.Column("updatedAt", sa.DateTime(), nullable=False),
        )
    if not _exists("account"):
        op.create_table(
            "account",
            sa.Column("id", sa.Text(), primary_key=True),
            sa.Column("accountId", sa.Text(), nullable=False),
            sa.Column("providerId", sa.Text(), nullable=False),
            sa.Column(
                "userId", sa.Text(), sa.ForeignKey("user.id", ondelete="CASCADE"), nullable=False
            ),
            sa.Column("accessToken", sa.Text(), nullable=True),
            sa.Column("refreshToken", sa.Text(), nullable=True),
            sa.Column("idToken", sa.Text(), nullable=True),
            sa.Column("accessTokenExpiresAt", sa.DateTime(), nullable=True),
            sa.Column("refreshTokenExpiresAt", sa.DateTime(), nullable=True),
            sa.Column("scope", sa.Text(), nullable=True),
            sa.Column("password", sa.Text(), nullable=True),
            sa.Column("createdAt", sa.DateTime(), nullable=False),
            sa.Column("updatedAt", sa.DateTime(), nullable=False),
        )
        op.create_index("account_userId_idx", "account", ["userId"])

    op.create_table(
        "ingestion_sync_state",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False, server_default="idle"),
        sa.Column("last_sync_time", sa.DateTime(), nullable=True),
        sa.Column("last_item_id", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("items_fetched", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("items_upserted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("items_deleted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reauth_fingerprint", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "ingestion_sync_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("fetched", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("upserted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("deleted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_ingestion_sync_runs_user_provider", "ingestion_sync_runs", ["user_id", "provider"]
    )
    op.create_table(
        "ingestion_memories",
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_ingestion_memories_user_source", "ingestion_memories", ["user_id", "source"]
    )
    op.create_table(
        "ingestion_sent_hashes",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("record_id", sa.String(512), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    # Our tables only: Better Auth's may hold the product's users.
    op.drop_table("ingestion_sent_hashes")
    op.drop_table("ingestion_memories")
    op.drop_table("ingestion_sync_runs")
    op.drop_table("ingestion_sync_state")
