"""Reconciliation: deletions no cursor reports, found from what was delivered.

When a provider's cursor expires it re-enumerates everything, and items deleted during the gap
are simply absent from the listing; the memory engine cannot be listed (design §6). So the
engine remembers what it delivered, and compares. What this module guarantees:

- **Delivered records** (`ingestion_delivered`): after the sink accepted a page, and before its
  cursor is stored, every upserted `sourceId` is remembered with its `occurredAt` and the
  generation of the enumeration in progress that covers it (0 when none), and every deleted one
  is forgotten. Whichever the sink (HTTP or embedded), in one transaction of bulk statements.
  Records a page reports as `seen` (listed by an open enumeration without being sent again) take
  that enumeration's generation, so its sweep keeps them.
- **Enumerations**: a page declaring `enumeration_started` opens a new generation for that
  scope (unique: never reused, even after a crash). The open generations travel in
  `ingestion_sync_state.reconcile`, stored in the same transaction as the page's cursor, so an
  enumeration interrupted by a crash resumes with its generation and the marks already made.
- **Sweep**: when a page declaring `enumeration_completed` has been accepted, every remembered
  record of the scope (prefix, and strictly inside its time bounds) whose generation is not the
  enumeration's is deleted from the sink, then forgotten, in batches of `SWEEP_BATCH`; only
  then is the cursor stored. A crash mid-sweep leaves the enumeration open, and the page comes
  again (its cursor was not stored), so the sweep completes next time. Nothing is ever swept
  for an enumeration that did not complete.
- **Scope gone**: every remembered record under the prefix is deleted and forgotten, and any
  enumeration in progress under it is abandoned.

Scopes of one (user, provider) in progress at the same time never overlap: starting one
abandons any open scope it contains or is contained in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ingestion.memory.base import MemorySink
from ingestion.memory.record import MemoryRecord, record_id
from ingestion.providers.base import Scope
from ingestion.storage.db import Database
from ingestion.storage.models import DeliveredRow

__all__ = ["SWEEP_BATCH", "DeliveredRecords", "OpenScope", "Reconciliation"]

#: Records selected, deleted and forgotten per sweep step (tests lower it).
SWEEP_BATCH = 500
#: Ids per `IN (…)` list (well under every driver's parameter limit).
_CHUNK = 500


@dataclass(frozen=True)
class OpenScope:
    """An enumeration in progress: its scope and the generation that marks what it delivered."""

    prefix: str
    generation: int
    since: datetime | None = None
    until: datetime | None = None

    def covers(self, source_id: str) -> bool:
        return source_id.startswith(self.prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    @classmethod
    def of(cls, prefix: str, value: Mapping[str, Any]) -> OpenScope:
        since, until = value.get("since"), value.get("until")
        return cls(
            prefix,
            int(value["generation"]),
            datetime.fromisoformat(since) if since else None,
            datetime.fromisoformat(until) if until else None,
        )


class Reconciliation:
    """The open enumerations of one (user, provider); stored as JSON with the cursor."""

    def __init__(self, scopes: Mapping[str, OpenScope] | None = None) -> None:
        self.scopes: dict[str, OpenScope] = dict(scopes or {})

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Reconciliation:
        """The stored state; anything unreadable counts as no enumeration in progress."""
        scopes: dict[str, OpenScope] = {}
        for prefix, raw in (value.get("scopes") or {}).items():
            try:
                scopes[str(prefix)] = OpenScope.of(str(prefix), raw)
            except (KeyError, TypeError, ValueError):
                continue
        return cls(scopes)

    def to_json(self) -> dict[str, Any]:
        return {"scopes": {p: s.to_json() for p, s in sorted(self.scopes.items())}}

    def start(self, scope: Scope) -> OpenScope:
        """Open a new generation for `scope`, abandoning overlapping open ones."""
        self.abandon_overlapping(scope.prefix)
        newest = max((s.generation for s in self.scopes.values()), default=0)
        generation = max(time.time_ns() // 1000, newest + 1)
        opened = OpenScope(scope.prefix, generation, scope.since, scope.until)
        self.scopes[scope.prefix] = opened
        return opened

    def generation_of(self, source_id: str) -> int:
        """The generation of the open scope covering `source_id`, 0 when none does."""
        for scope in self.scopes.values():
            if scope.covers(source_id):
                return scope.generation
        return 0

    def finish(self, prefix: str) -> OpenScope | None:
        """Close the enumeration of `prefix`; None when none was open (nothing to sweep)."""
        return self.scopes.pop(prefix, None)

    def abandon_overlapping(self, prefix: str) -> None:
        for open_prefix in list(self.scopes):
            if open_prefix.startswith(prefix) or prefix.startswith(open_prefix):
                del self.scopes[open_prefix]

    def abandon_under(self, prefix: str) -> None:
        for open_prefix in list(self.scopes):
            if open_prefix.startswith(prefix):
                del self.scopes[open_prefix]


class DeliveredRecords:
    """`ingestion_delivered` of one (user, provider), and the sweeps over it."""

    def __init__(self, db: Database, sink: MemorySink, user_id: str, provider: str) -> None:
        self.db = db
        self.sink = sink
        self.user_id = user_id
        self.provider = provider

    async def remember(
        self,
        upserts: Sequence[MemoryRecord],
        deletes: Sequence[str],
        reconciliation: Reconciliation,
        seen: Sequence[str] = (),
        *,
        connection: AsyncConnection | None = None,
    ) -> None:
        """Remember accepted upserts (with their generation) and forget accepted deletes,
        in one transaction: one batched upsert statement, one delete per `_CHUNK` ids. Records
        `seen` by an open enumeration (listed, not sent again) take its generation. With
        `connection`, inside the caller's transaction (the page's cursor commits with it)."""
        if not upserts and not deletes and not seen:
            return
        if connection is None:
            async with self.db.engine.begin() as connection:
                await self.remember(upserts, deletes, reconciliation, seen, connection=connection)
            return
        kept = {r.source_id: r for r in upserts}
        gone = [sid for sid in dict.fromkeys(deletes) if sid not in kept]
        marks: dict[int, list[str]] = {}
        for sid in dict.fromkeys(seen):
            generation = reconciliation.generation_of(sid)
            if generation and sid not in kept:
                marks.setdefault(generation, []).append(sid)
        for generation, ids in marks.items():
            for start in range(0, len(ids), _CHUNK):
                await connection.execute(
                    update(DeliveredRow)
                    .where(self._mine(), DeliveredRow.source_id.in_(ids[start : start + _CHUNK]))
                    .values(generation=generation)
                )
        if kept:
            insert = sqlite.insert if self.db.kind == "sqlite" else postgresql.insert
            statement = insert(DeliveredRow)
            statement = statement.on_conflict_do_update(
                index_elements=[
                    DeliveredRow.user_id,
                    DeliveredRow.provider,
                    DeliveredRow.source_id,
                ],
                set_={
                    "occurred_at": statement.excluded.occurred_at,
                    "generation": statement.excluded.generation,
                },
            )
            await connection.execute(
                statement,
                [
                    {
                        "user_id": self.user_id,
                        "provider": self.provider,
                        "source_id": sid,
                        "occurred_at": record.occurred_at,
                        "generation": reconciliation.generation_of(sid),
                    }
                    for sid, record in kept.items()
                ],
            )
        for start in range(0, len(gone), _CHUNK):
            await connection.execute(
                delete(DeliveredRow).where(
                    self._mine(), DeliveredRow.source_id.in_(gone[start : start + _CHUNK])
                )
            )

    async def sweep_unseen(self, scope: OpenScope) -> int:
        """Delete every remembered record of a completed enumeration's scope that it did not
        deliver; returns how many."""
        condition = and_(
            _under(scope.prefix),
            DeliveredRow.generation != scope.generation,
            *([DeliveredRow.occurred_at > scope.since] if scope.since else []),
            *([DeliveredRow.occurred_at < scope.until] if scope.until else []),
        )
        return await self._sweep(condition)

    async def sweep_gone(self, prefix: str, *, batches: int | None = None) -> int:
        """Delete every remembered record under `prefix` (at most `batches` batches of
        `SWEEP_BATCH` when given); returns how many."""
        return await self._sweep(_under(prefix), batches)

    async def _sweep(self, condition: ColumnElement[bool], batches: int | None = None) -> int:
        """Sink first, memory second, one bounded batch at a time: a failure leaves the rest
        remembered, so a later sweep finds it again."""
        swept = 0
        after: str | None = None  # keyset: rows before it were swept or are kept
        while batches is None or batches > 0:
            if batches is not None:
                batches -= 1
            query = select(DeliveredRow.source_id).where(self._mine(), condition)
            if after is not None:
                query = query.where(DeliveredRow.source_id > after)
            async with self.db.engine.connect() as connection:
                rows = await connection.execute(
                    query.order_by(DeliveredRow.source_id).limit(SWEEP_BATCH)
                )
                source_ids = [row.source_id for row in rows]
            if not source_ids:
                return swept
            after = source_ids[-1]
            await self.sink.delete(
                self.user_id, [record_id(self.provider, self.user_id, s) for s in source_ids]
            )
            async with self.db.engine.begin() as connection:
                await connection.execute(
                    delete(DeliveredRow).where(self._mine(), DeliveredRow.source_id.in_(source_ids))
                )
            swept += len(source_ids)
        return swept

    def _mine(self) -> ColumnElement[bool]:
        return and_(DeliveredRow.user_id == self.user_id, DeliveredRow.provider == self.provider)


def _under(prefix: str) -> ColumnElement[bool]:
    """`source_id` starts with `prefix`, exactly (no LIKE: no wildcards, no case folding)."""
    if not prefix:
        return true()
    return func.substr(DeliveredRow.source_id, 1, len(prefix)) == prefix
