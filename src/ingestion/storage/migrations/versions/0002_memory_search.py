"""Full-text search over the embedded memory store.

SQLite: an FTS5 index (`ingestion_memories_fts`, porter stemming, diacritics folded) whose
content is read from `ingestion_memories` through the integer column `search_key`, kept in step
by triggers. The key is derived from the record id (not the implicit rowid, which `VACUUM` may
renumber). PostgreSQL: a stored generated `tsvector` column (title weighted above content,
English configuration) with a GIN index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TRIGGERS = (
    """
    CREATE TRIGGER ingestion_memories_fts_insert AFTER INSERT ON ingestion_memories
    WHEN new.search_key IS NOT NULL BEGIN
        INSERT INTO ingestion_memories_fts(rowid, title, content)
        VALUES (new.search_key, new.title, new.content);
    END
    """,
    """
    CREATE TRIGGER ingestion_memories_fts_delete AFTER DELETE ON ingestion_memories
    WHEN old.search_key IS NOT NULL BEGIN
        INSERT INTO ingestion_memories_fts(ingestion_memories_fts, rowid, title, content)
        VALUES ('delete', old.search_key, old.title, old.content);
    END
    """,
    """
    CREATE TRIGGER ingestion_memories_fts_update
    AFTER UPDATE OF title, content, search_key ON ingestion_memories BEGIN
        INSERT INTO ingestion_memories_fts(ingestion_memories_fts, rowid, title, content)
        SELECT 'delete', old.search_key, old.title, old.content WHERE old.search_key IS NOT NULL;
        INSERT INTO ingestion_memories_fts(rowid, title, content)
        SELECT new.search_key, new.title, new.content WHERE new.search_key IS NOT NULL;
    END
    """,
)


def _search_key(record_id: str) -> int:
    # Frozen copy of ingestion.memory.search.search_key (a migration never imports app code).
    return int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") >> 1


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("ingestion_memories", sa.Column("search_key", sa.BigInteger(), nullable=True))
    ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM ingestion_memories"))]
    if ids:
        bind.execute(
            sa.text("UPDATE ingestion_memories SET search_key = :key WHERE id = :id"),
            [{"key": _search_key(i), "id": i} for i in ids],
        )
    op.create_index(
        "ix_ingestion_memories_search_key", "ingestion_memories", ["search_key"], unique=True
    )
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE ingestion_memories_fts USING fts5("
            "title, content, content='ingestion_memories', content_rowid='search_key', "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )
        for trigger in _TRIGGERS:
            op.execute(trigger)
        op.execute("INSERT INTO ingestion_memories_fts(ingestion_memories_fts) VALUES ('rebuild')")
    else:
        op.execute(
            "ALTER TABLE ingestion_memories ADD COLUMN search_vector tsvector "
            "GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
            "setweight(to_tsvector('english'::regconfig, content), 'B')) STORED"
        )
        op.execute(
            "CREATE INDEX ix_ingestion_memories_search_vector "
            "ON ingestion_memories USING gin (search_vector)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS ingestion_memories_fts_{name}")
        op.execute("DROP TABLE IF EXISTS ingestion_memories_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_ingestion_memories_search_vector")
        op.execute("ALTER TABLE ingestion_memories DROP COLUMN IF EXISTS search_vector")
    op.drop_index("ix_ingestion_memories_search_key", table_name="ingestion_memories")
    with op.batch_alter_table("ingestion_memories") as batch:
        batch.drop_column("search_key")
