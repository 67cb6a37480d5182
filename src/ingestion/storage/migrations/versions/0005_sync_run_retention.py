"""Run-history indexes for bounded retention: the pair's runs by id (pruning, newest first) and
the pair's run still marked running (`begin`), replacing the plain (user_id, provider) index.

Rows past the retention (`SYNC_RUNS_KEEP` per pair, `SYNC_RUNS_MAX_AGE_DAYS`) are dropped by
the service as runs finish; this migration deletes nothing.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_index(
        "ix_ingestion_sync_runs_pair_id", "ingestion_sync_runs", ["user_id", "provider", "id"]
    )
    op.create_index(
        "ix_ingestion_sync_runs_running",
        "ingestion_sync_runs",
        ["user_id", "provider"],
        postgresql_where=_RUNNING,
        sqlite_where=_RUNNING,
    )
    op.drop_index("ix_ingestion_sync_runs_user_provider", table_name="ingestion_sync_runs")


def downgrade() -> None:
    op.create_index(
        "ix_ingestion_sync_runs_user_provider", "ingestion_sync_runs", ["user_id", "provider"]
    )
    op.drop_index("ix_ingestion_sync_runs_running", table_name="ingestion_sync_runs")
    op.drop_index("ix_ingestion_sync_runs_pair_id", table_name="ingestion_sync_runs")
