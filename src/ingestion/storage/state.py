"""Sync state (`ingestion_sync_state`) and run history (`ingestion_sync_runs`).

The cursor of a (user, provider) moves only through `checkpoint`, which the sync engine calls
after the memory sink accepted a page: the stored cursor never runs ahead of accepted items.

Run history is bounded: each `finish` keeps the pair's newest `keep_runs` runs and drops those
older than `max_run_age` (a few indexed rows per pair, whatever the number of ticks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ingestion.storage.db import Database
from ingestion.storage.models import SyncRun, SyncStateRow

__all__ = ["RunView", "StateView", "SyncStateStore"]

_ERROR_LIMIT = 2000
#: Run history kept per (user, provider) by default (`SYNC_RUNS_KEEP`, `SYNC_RUNS_MAX_AGE_DAYS`).
DEFAULT_KEEP_RUNS = 50
DEFAULT_MAX_RUN_AGE = timedelta(days=30)


@dataclass(frozen=True)
class StateView:
    user_id: str
    provider: str
    status: str
    cursor: Mapping[str, Any]
    last_sync_time: datetime | None
    last_error: str | None
    items_fetched: int
    items_upserted: int
    items_deleted: int
    reauth_fingerprint: str | None
    updated_at: datetime | None
    #: The engine's reconciliation state stored with the cursor (`ingestion.reconcile`).
    reconcile: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, user_id: str, provider: str) -> StateView:
        return cls(user_id, provider, "idle", {}, None, None, 0, 0, 0, None, None)

    @classmethod
    def of(cls, row: SyncStateRow) -> StateView:
        return cls(
            row.user_id,
            row.provider,
            row.status,
            dict(row.cursor or {}),
            row.last_sync_time,
            row.last_error,
            row.items_fetched,
            row.items_upserted,
            row.items_deleted,
            row.reauth_fingerprint,
            row.updated_at,
            dict(row.reconcile or {}),
        )


@dataclass(frozen=True)
class RunView:
    id: int
    job_id: str | None
    user_id: str
    provider: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    fetched: int
    upserted: int
    deleted: int
    error: str | None
    #: The run's counters (`requests`, `defective`, `skipped`…).
    details: dict[str, Any]


def _rowcount(result: Any) -> int:
    """Rows an `UPDATE` matched."""
    count: int = result.rowcount
    return count


class SyncStateStore:
    def __init__(
        self,
        db: Database,
        *,
        keep_runs: int = DEFAULT_KEEP_RUNS,
        max_run_age: timedelta = DEFAULT_MAX_RUN_AGE,
    ) -> None:
        self.db = db
        self.keep_runs = keep_runs
        self.max_run_age = max_run_age

    async def load(self, user_id: str, provider: str) -> StateView:
        async with self.db.session() as session:
            row = await session.get(SyncStateRow, (user_id, provider))
            return StateView.of(row) if row else StateView.empty(user_id, provider)

    async def all(self) -> list[StateView]:
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(SyncStateRow).order_by(SyncStateRow.user_id, SyncStateRow.provider)
                )
            ).scalars()
            return [StateView.of(r) for r in rows]

    async def _row(self, session: AsyncSession, user_id: str, provider: str) -> SyncStateRow:
        """The pair's row, created if absent; safe when several processes create it at once."""
        row = await session.get(SyncStateRow, (user_id, provider))
        if row is not None:
            return row
        insert = sqlite_insert if self.db.kind == "sqlite" else pg_insert
        await session.execute(
            insert(SyncStateRow)
            .values(
                user_id=user_id,
                provider=provider,
                status="idle",
                cursor={},
                updated_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=["user_id", "provider"])
        )
        created = await session.get(SyncStateRow, (user_id, provider))
        assert created is not None
        return created

    async def begin(self, user_id: str, provider: str, job_id: str | None) -> int:
        """Mark the pair running and open a run-history row; returns the run id."""
        now = datetime.now(UTC)
        async with self.db.session() as session:
            row = await self._row(session, user_id, provider)
            row.status = "running"
            row.started_at = now
            # One sync per pair runs at a time: a run still "running" belonged to a process
            # that died (SIGKILL, power loss); close it so history does not show it forever.
            await session.execute(
                update(SyncRun)
                .where(
                    SyncRun.user_id == user_id,
                    SyncRun.provider == provider,
                    SyncRun.status == "running",
                )
                .values(status="abandoned", finished_at=now, error="the process running it died")
            )
            run = SyncRun(
                job_id=job_id,
                user_id=user_id,
                provider=provider,
                started_at=now,
                status="running",
                details={},
            )
            session.add(run)
            await session.flush()
            return run.id

    async def checkpoint(
        self,
        user_id: str,
        provider: str,
        run_id: int,
        cursor: Mapping[str, Any],
        *,
        fetched: int,
        upserted: int,
        deleted: int,
        last_item_id: str | None = None,
        reconcile: Mapping[str, Any] | None = None,
        connection: AsyncConnection | None = None,
    ) -> None:
        """Store the cursor of an accepted page and add its counts (one transaction); the
        engine's reconciliation state, when given, is stored in the same transaction.

        Two `UPDATE`s that add the counts in the database (no read first); the row is created
        only when it is missing. With `connection`, inside the caller's transaction (the sync
        engine stores a page's delivered records and its cursor in one commit)."""
        if connection is None:
            async with self.db.engine.begin() as connection:
                await self.checkpoint(
                    user_id,
                    provider,
                    run_id,
                    cursor,
                    fetched=fetched,
                    upserted=upserted,
                    deleted=deleted,
                    last_item_id=last_item_id,
                    reconcile=reconcile,
                    connection=connection,
                )
            return
        values: dict[str, Any] = {
            "cursor": dict(cursor),
            "items_fetched": SyncStateRow.items_fetched + fetched,
            "items_upserted": SyncStateRow.items_upserted + upserted,
            "items_deleted": SyncStateRow.items_deleted + deleted,
        }
        if reconcile is not None:
            values["reconcile"] = dict(reconcile)
        if last_item_id:
            values["last_item_id"] = last_item_id
        pair = (SyncStateRow.user_id == user_id, SyncStateRow.provider == provider)
        store = update(SyncStateRow).where(*pair).values(values)
        if not _rowcount(await connection.execute(store)):
            insert = sqlite_insert if self.db.kind == "sqlite" else pg_insert
            await connection.execute(
                insert(SyncStateRow)
                .values(user_id=user_id, provider=provider, status="idle", cursor={})
                .on_conflict_do_nothing(index_elements=["user_id", "provider"])
            )
            await connection.execute(store)
        await connection.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(
                fetched=SyncRun.fetched + fetched,
                upserted=SyncRun.upserted + upserted,
                deleted=SyncRun.deleted + deleted,
            )
        )

    async def finish(
        self,
        user_id: str,
        provider: str,
        run_id: int,
        status: str,
        *,
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Close the run. `status`: ok | error | deferred | cancelled | reauth_required |
        quota_exhausted (kept until a sync succeeds again)."""
        now = datetime.now(UTC)
        error = error[:_ERROR_LIMIT] if error else None
        async with self.db.session() as session:
            row = await self._row(session, user_id, provider)
            if status == "ok":
                row.status = "ok"
                row.last_sync_time = now
                row.last_error = None
                row.reauth_fingerprint = None
            elif status in ("deferred", "cancelled"):
                row.status = "ok" if row.last_sync_time else "idle"
                row.last_error = error
            else:
                row.status = status
                row.last_error = error
                if status == "reauth_required":
                    row.reauth_fingerprint = fingerprint
            run = await session.get(SyncRun, run_id)
            if run is not None:
                run.status = status
                run.finished_at = now
                run.error = error
                run.details = dict(details or {})
            await self._prune_runs(session, user_id, provider, now)

    async def _prune_runs(
        self, session: AsyncSession, user_id: str, provider: str, now: datetime
    ) -> None:
        """Drop the pair's runs beyond the newest `keep_runs` and those past `max_run_age`
        (both found through the (user_id, provider, id) index, never a scan of all history)."""
        pair = (SyncRun.user_id == user_id, SyncRun.provider == provider)
        oldest_kept = await session.scalar(
            select(SyncRun.id)
            .where(*pair)
            .order_by(SyncRun.id.desc())
            .offset(self.keep_runs - 1)
            .limit(1)
        )
        stale = SyncRun.started_at < now - self.max_run_age
        condition = stale if oldest_kept is None else or_(SyncRun.id < oldest_kept, stale)
        await session.execute(
            delete(SyncRun)
            .where(*pair, condition, SyncRun.status != "running")
            .execution_options(synchronize_session=False)
        )

    async def mark_reauth_required(
        self, user_id: str, provider: str, message: str, fingerprint: str | None
    ) -> None:
        async with self.db.session() as session:
            row = await self._row(session, user_id, provider)
            row.status = "reauth_required"
            row.last_error = message[:_ERROR_LIMIT]
            row.reauth_fingerprint = fingerprint

    async def recent_runs(self, limit: int = 20) -> list[RunView]:
        async with self.db.session() as session:
            rows = (
                await session.execute(select(SyncRun).order_by(SyncRun.id.desc()).limit(limit))
            ).scalars()
            return [
                RunView(
                    r.id,
                    r.job_id,
                    r.user_id,
                    r.provider,
                    r.started_at,
                    r.finished_at,
                    r.status,
                    r.fetched,
                    r.upserted,
                    r.deleted,
                    r.error,
                    dict(r.details or {}),
                )
                for r in rows
            ]
