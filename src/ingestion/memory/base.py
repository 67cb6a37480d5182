"""The memory sink contract: where records go (the memory engine, or the embedded store).

Guarantees every sink keeps:

- `upsert` and `delete` return only when the engine accepted everything they were given;
  otherwise they raise (`RetryableError` for 429/5xx/network after retries, `PermanentError`
  for a refusal), and the sync engine does not move the cursor.
- Upserts are idempotent by record `id`; resending an accepted record is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ingestion.memory.record import MemoryRecord

__all__ = ["MemorySink"]


class MemorySink(Protocol):
    #: `http` (the memory engine) or `embedded` (the service's database).
    kind: str

    async def upsert(
        self, user_id: str, records: Sequence[MemoryRecord], *, force: bool = False
    ) -> int:
        """Store records; returns how many were sent (unchanged ones may be skipped unless
        `force`)."""
        ...

    async def delete(self, user_id: str, record_ids: Sequence[str]) -> None:
        """Remove records by id (absent ids are not an error)."""
        ...

    async def aclose(self) -> None: ...
