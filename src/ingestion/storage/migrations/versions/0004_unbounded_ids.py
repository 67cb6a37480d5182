"""Ids of any legal length: user ids, record ids and source ids become unbounded text.

Google allows event ids of up to 1,024 characters, so `{calendarId}/{eventId}` and the record id
`calendar:{userId}:{calendarId}/{eventId}` overflowed the `VARCHAR(512)` columns on PostgreSQL
(DataError: the page failed on every attempt, then on every tick). Better Auth's user ids are
`text`, so `VARCHAR(255)` user ids could overflow the same way. The longest legal ids (a 254-byte
calendar id, a 1,024-character event id, a user id of a few hundred bytes) stay well inside
PostgreSQL's B-tree entry limit (about 2,700 bytes), so the primary keys keep their indexes.

On PostgreSQL `varchar` to `text` is binary-compatible: no table rewrite, no index rebuild.
SQLite never enforced the lengths (both are TEXT affinity), so nothing changes there.
Better Auth tables are not touched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: (table, column, length before this revision)
COLUMNS = (
    ("ingestion_sync_state", "user_id", 255),
    ("ingestion_sync_runs", "user_id", 255),
    ("ingestion_memories", "id", 512),
    ("ingestion_memories", "user_id", 255),
    ("ingestion_sent_hashes", "user_id", 255),
    ("ingestion_sent_hashes", "record_id", 512),
    ("ingestion_delivered", "user_id", 255),
    ("ingestion_delivered", "source_id", 512),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, length in COLUMNS:
        op.alter_column(table, column, type_=sa.Text(), existing_type=sa.String(length))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, length in COLUMNS:  # fails if a longer id was stored since
        op.alter_column(table, column, type_=sa.String(length), existing_type=sa.Text())
