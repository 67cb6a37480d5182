"""HTTP sink to the memory engine (design §6)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ingestion.config import Settings
from ingestion.memory.record import MemoryRecord
from ingestion.storage.db import Database

__all__ = ["HttpMemorySink"]


class HttpMemorySink:
    kind = "http"

    def __init__(self, settings: Settings, db: Database, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.db = db
        self.http = http

    async def upsert(
        self, user_id: str, records: Sequence[MemoryRecord], *, force: bool = False
    ) -> int:
        raise NotImplementedError

    async def delete(self, user_id: str, record_ids: Sequence[str]) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None
