"""The embedded memory store: records kept in the service's own database.

Used when MEMORY_ENGINE_URL is unset, so a laptop needs no memory engine. Upserts by id are
idempotent; `upsert` returns once the rows are committed, and a record whose content hash is
unchanged is not rewritten (unless `force`). Every row is in the full-text index as soon as it
is committed (`search`, see `ingestion.memory.search`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

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
        """Insert or update by id in one transaction; returns how many rows were written
        (records whose content hash is unchanged are skipped unless `force`)."""
        unique = list({record.id: record for record in records}.values())
        if not unique:
            return 0
        table = cast(Table, MemoryRow.__table__)
        async with self.db.engine.begin() as connection:
            if force:
                changed = unique
            else:
                stored = dict(
                    (
                        await connection.execute(
                            select(table.c.id, table.c.content_hash).where(
                                table.c.id.in_([r.id for r in unique])
                            )
                        )
                    ).all()
                )
                changed = [r for r in unique if stored.get(r.id) != r.content_hash]
            if changed:
                now = datetime.now(UTC)
                insert = sqlite.insert if self.db.kind == "sqlite" else postgresql.insert
                statement = insert(table)
                statement = statement.on_conflict_do_update(
                    index_elements=[table.c.id],
                    set_={
                        name: statement.excluded[name]
                        for name in table.c.keys()  # noqa: SIM118 (a column collection)
                        if name not in ("id", "search_key")
                    },
                )
                await connection.execute(statement, [_row(r, now) for r in changed])
        return len(changed)

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


def _row(record: MemoryRecord, now: datetime) -> dict[str, Any]:
    """Column values of a record's row."""
    return {
        "id": record.id,
        "user_id": record.user_id,
        "source": record.source,
        "source_id": record.source_id,
        "type": record.type,
        "title": record.title,
        "content": record.content,
        "url": record.url,
        "occurred_at": record.occurred_at,
        "metadata": record.metadata,
        "content_hash": record.content_hash,
        "updated_at": now,
        "search_key": search_key(record.id),
    }
