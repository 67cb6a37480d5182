"""The embedded memory store: records kept in the service's own database.

Used when MEMORY_ENGINE_URL is unset, so a laptop needs no memory engine. Upserts by id are
idempotent; `upsert` returns once the rows are committed, and a record whose content hash is
unchanged is not rewritten (unless `force`). Every row is in the full-text index as soon as it
is committed (`search`, see `ingestion.memory.search`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from ingestion.memory.record import MemoryRecord
from ingestion.memory.search import SearchHit, search_key, search_memories
from ingestion.storage.db import Database
from ingestion.storage.models import MemoryRow

__all__ = ["LocalMemoryStore"]


class LocalMemoryStore:
    kind = "embedded"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(
        self, user_id: str, records: Sequence[MemoryRecord], *, force: bool = False
    ) -> int:
        if not records:
            return 0
        changed = 0
        async with self.db.session() as session:
            ids = [r.id for r in records]
            existing = {
                row.id: row
                for row in (
                    await session.execute(select(MemoryRow).where(MemoryRow.id.in_(ids)))
                ).scalars()
            }
            for record in records:
                row = existing.get(record.id)
                if row is not None and row.content_hash == record.content_hash and not force:
                    continue
                changed += 1
                if row is None:
                    row = MemoryRow(id=record.id, search_key=search_key(record.id))
                    session.add(row)
                    existing[record.id] = row
                row.user_id = record.user_id
                row.source = record.source
                row.source_id = record.source_id
                row.type = record.type
                row.title = record.title
                row.content = record.content
                row.url = record.url
                row.occurred_at = record.occurred_at
                row.meta = record.metadata
                row.content_hash = record.content_hash
        return changed

    async def delete(self, user_id: str, record_ids: Sequence[str]) -> None:
        if not record_ids:
            return
        async with self.db.session() as session:
            await session.execute(
                delete(MemoryRow).where(
                    MemoryRow.user_id == user_id, MemoryRow.id.in_(list(record_ids))
                )
            )

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        source: str | None = None,
        limit: int = 20,
    ) -> list[SearchHit]:
        """Full-text search; see `ingestion.memory.search.search_memories`."""
        return await search_memories(self.db, query, user_id=user_id, source=source, limit=limit)

    async def aclose(self) -> None:
        return None
