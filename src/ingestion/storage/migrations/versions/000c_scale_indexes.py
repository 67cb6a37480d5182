"""Indexes for the control plane at scale (100,000 users and more), on our own table only.

- `(status, user_id, provider)`: the status pages filtered by status (the accounts in error or
  waiting on a reconnect come first on the status page), in keyset order.
- `(provider, status, last_sync_time)`: the aggregate (counts by provider and status, oldest and
  newest successful sync) as one index-only scan.
- `(provider, last_sync_time)`: the median cursor age of `/metrics`, read at an offset of the
  index instead of sorting every row.

Better Auth's `"account"` table is read through its `"userId"` index (created by migration 0001
when it created the table; Better Auth's own schema indexes `userId` too) and is never altered.

Revision ID: 000c
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "000c"
down_revision = "000d"
branch_labels = None
depends_on = None

_TABLE = "ingestion_sync_state"
_INDEXES = {
    "ix_ingestion_sync_state_status_pair": ["status", "user_id", "provider"],
    "ix_ingestion_sync_state_provider_status": ["provider", "status", "last_sync_time"],
    "ix_ingestion_sync_state_provider_synced": ["provider", "last_sync_time"],
}


def upgrade() -> None:
    for name, columns in _INDEXES.items():
        op.create_index(name, _TABLE, columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name=_TABLE)
