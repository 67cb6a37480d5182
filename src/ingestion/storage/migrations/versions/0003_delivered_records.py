"""Delivered records and reconciliation state, so deletions missed during a cursor gap propagate.

`ingestion_delivered` remembers, per (user, provider), the `sourceId` of every record the sink
accepted (and not deleted since), its `occurredAt` and the enumeration generation that last
delivered it. `ingestion_sync_state.reconcile` holds the enumerations in progress. Existing
deliveries are carried over: from the embedded store (with their time) and from the HTTP sink's
sent hashes (time unknown: NULL, never swept by a time-bounded enumeration). Better Auth tables
are not touched.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "ingestion_delivered",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("source_id", sa.String(512), primary_key=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=True),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("ingestion_sync_state", sa.Column("reconcile", sa.JSON(), nullable=True))
    op.execute(
        "INSERT INTO ingestion_delivered (user_id, provider, source_id, occurred_at, generation) "
        "SELECT user_id, source, source_id, occurred_at, 0 FROM ingestion_memories WHERE true "
        "ON CONFLICT DO NOTHING"
    )
    # A sent hash's record id is `{source}:{userId}:{sourceId}`; the source has no colon.
    position = "instr" if bind.dialect.name == "sqlite" else "strpos"
    source = f"substr(record_id, 1, {position}(record_id, ':') - 1)"
    op.execute(  # only constant SQL fragments are interpolated
        "INSERT INTO ingestion_delivered (user_id, provider, source_id, occurred_at, generation) "  # noqa: S608
        f"SELECT user_id, {source}, "
        f"substr(record_id, length({source}) + length(user_id) + 3), NULL, 0 "
        "FROM ingestion_sent_hashes "
        f"WHERE {position}(record_id, ':') > 1 "
        f"AND substr(record_id, {position}(record_id, ':') + 1, length(user_id) + 1) "
        "= user_id || ':' "
        "ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    with op.batch_alter_table("ingestion_sync_state") as batch:
        batch.drop_column("reconcile")
    op.drop_table("ingestion_delivered")
