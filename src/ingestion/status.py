"""What `ingestion status --json` and `GET /v1/status` show: one document for both.

One page of (user, provider) pairs: sync status, last successful sync, item counts, last
error, whether a person must reconnect (`accounts`, in user id then provider order, at most
`limit`, after an opaque `cursor`, optionally of one `provider` and one `status`); the cursor of
the next page (`nextCursor`, null on the last); an `aggregate` block over every pair (counts by
provider and status, oldest and median last successful sync: the cursor ages); queue figures
and recent runs. No token appears. Nothing here reads every row: pages are keyset reads over
indexes and the aggregate is one grouped index-only scan (`ingestion.storage.overview`).
A removed or disconnected pair (`ingestion.forget`) shows its removal as its status, with a
`removal` block (reason, when its records are purged, how many were); `push` is `active`,
`expired` or `off` (`ingestion.push`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ingestion.clock import utcnow
from ingestion.config import PROVIDER_NAMES
from ingestion.providers.registry import account_provider_of
from ingestion.push.store import ChannelStore
from ingestion.storage.db import Database
from ingestion.storage.overview import (
    STATUSES,
    Aggregate,
    InvalidStatusQuery,
    aggregate,
    decode_cursor,
    pair_page,
)
from ingestion.storage.removals import Removals, RemovalView
from ingestion.storage.state import StateView, SyncStateStore

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "AggregateCache",
    "InvalidStatusQuery",
    "QueueStatsFn",
    "StatusQuery",
    "gather_status",
    "row_of",
]

QueueStatsFn = Callable[[], Awaitable[dict[str, Any]]]

#: Pairs per page when no `limit` is given, and the most one page may hold.
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


class StatusQuery:
    """A validated page request: `limit`, `cursor`, `provider`, `status` (all optional)."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        provider: str | None = None,
        status: str | None = None,
    ) -> None:
        if limit is not None and not 0 <= limit <= MAX_LIMIT:
            raise InvalidStatusQuery(f"limit must be between 0 and {MAX_LIMIT}")
        if provider is not None and provider not in PROVIDER_NAMES:
            raise InvalidStatusQuery(f"provider must be one of {', '.join(PROVIDER_NAMES)}")
        if status is not None and status not in STATUSES:
            raise InvalidStatusQuery(f"status must be one of {', '.join(STATUSES)}")
        self.limit = DEFAULT_LIMIT if limit is None else limit
        self.cursor = decode_cursor(cursor) if cursor else None
        self.provider = provider
        self.status = status

    @classmethod
    def of(cls, params: dict[str, str]) -> StatusQuery:
        """From query parameters (`InvalidStatusQuery` names what is wrong)."""
        raw = params.get("limit")
        limit: int | None = None
        if raw is not None:
            if not raw.isdigit() or len(raw) > 6:
                raise InvalidStatusQuery(f"limit must be an integer between 0 and {MAX_LIMIT}")
            limit = int(raw)
        return cls(
            limit=limit,
            cursor=params.get("cursor") or None,
            provider=params.get("provider") or None,
            status=params.get("status") or None,
        )


class AggregateCache:
    """The aggregate, reused for a while and computed by one caller at a time (the others
    wait for that result): a status page refreshing every few seconds, several tabs and a
    scraper cost one grouped scan, not one each.

    A result is reused for `reuse_factor` times as long as it took to compute, at most
    `max_age` seconds: a small deployment (a scan of a few milliseconds) always sees fresh
    figures; at 100,000 users (about 0.1 s) they are at most 5 s old, and the scans take at
    most 1/`reuse_factor` of one database connection's time."""

    def __init__(self, max_age: float = 5.0, reuse_factor: float = 50.0) -> None:
        self.max_age = max_age
        self.reuse_factor = reuse_factor
        self._value: Aggregate | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def get(self, db: Database) -> Aggregate:
        if self._value is not None and time.monotonic() < self._until:
            return self._value
        async with self._lock:
            if self._value is None or time.monotonic() >= self._until:
                started = time.monotonic()
                async with db.session() as session:
                    self._value = await aggregate(session)
                took = time.monotonic() - started
                self._until = time.monotonic() + min(self.max_age, took * self.reuse_factor)
            return self._value


def _providers_of() -> dict[str, list[str]]:
    providers_of: dict[str, list[str]] = {}
    for name in PROVIDER_NAMES:
        providers_of.setdefault(account_provider_of(name), []).append(name)
    return providers_of


def aggregate_json(found: Aggregate) -> dict[str, Any]:
    """`counts` (provider -> status -> pairs with a sync state row), `pairs` (their total),
    `oldestSyncAt` / `medianSyncAt` (provider -> the oldest and the median last successful
    sync: the cursor age is now minus these; providers never synced are absent)."""
    return {
        "counts": found.counts,
        "pairs": sum(sum(by_status.values()) for by_status in found.counts.values()),
        "oldestSyncAt": {p: _iso(oldest) for p, (oldest, _, _) in found.synced.items()},
        "medianSyncAt": {p: _iso(median) for p, (_, _, median) in found.synced.items()},
    }


async def gather_status(
    db: Database,
    queue_stats: QueueStatsFn | None = None,
    *,
    query: StatusQuery | None = None,
    runs: int = 20,
    aggregates: AggregateCache | None = None,
) -> dict[str, Any]:
    query = query or StatusQuery()
    store = SyncStateStore(db)
    async with db.session() as session:
        page = await pair_page(
            session,
            _providers_of(),
            limit=query.limit,
            cursor=query.cursor,
            provider=query.provider,
            status=query.status,
        )
    found = await (aggregates or AggregateCache(0.0)).get(db)
    queue: dict[str, Any] = await queue_stats() if queue_stats else {"kind": "none"}
    recent = [
        {
            "id": r.id,
            "jobId": r.job_id,
            "userId": r.user_id,
            "provider": r.provider,
            "startedAt": _iso(r.started_at),
            "finishedAt": _iso(r.finished_at),
            "status": r.status,
            "fetched": r.fetched,
            "upserted": r.upserted,
            "deleted": r.deleted,
            # Items stored with defects / not stored at all (`ingestion.providers.items`).
            "defective": int(r.details.get("defective") or 0),
            "skipped": int(r.details.get("skipped") or 0),
            "error": r.error,
        }
        for r in await store.recent_runs(runs)
    ]
    users = sorted({state.user_id for state, _ in page.pairs})
    removals = {(r.user_id, r.provider): r for r in await Removals(db).all(users)}
    # Push (ingestion.push): `active`, `expired` (polling is back on the cron) or `off`.
    pushed = await ChannelStore(db).statuses(utcnow(), users=users)
    rows = []
    for state, linked in page.pairs:
        key = (state.user_id, state.provider)
        row = row_of(state, linked, removals.get(key))
        row["push"] = pushed.get(key, "off")
        rows.append(row)
    return {
        "accounts": rows,
        "nextCursor": page.next_cursor,
        "limit": query.limit,
        "aggregate": aggregate_json(found),
        "queue": queue,
        "recentRuns": recent,
    }


def row_of(
    state: StateView, account_provider: str | None, removal: RemovalView | None = None
) -> dict[str, Any]:
    """One pair as the status document shows it."""
    row: dict[str, Any] = {
        "userId": state.user_id,
        "provider": state.provider,
        "accountProvider": account_provider,
        "connected": account_provider is not None,
        "status": state.status,
        "lastSyncTime": _iso(state.last_sync_time),
        "itemsFetched": state.items_fetched,
        "itemsUpserted": state.items_upserted,
        "itemsDeleted": state.items_deleted,
        "lastError": state.last_error,
        "reauthRequired": state.status == "reauth_required",
        "updatedAt": _iso(state.updated_at),
    }
    if removal is not None:
        row["status"] = removal.reason
        row["removal"] = removal.as_json()
    return row
