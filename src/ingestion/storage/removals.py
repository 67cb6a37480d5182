"""`ingestion_removals`: the (user, provider) pairs the service stopped syncing.

Read by the sync engine (a job of a stopped pair ends without writing) and the scheduler (a
stopped pair is not scheduled); written by `ingestion.forget` and the scheduler's disconnect
detection. See `ingestion.forget` for what a removal promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from ingestion.config import Settings
from ingestion.storage.db import Database
from ingestion.storage.models import RemovalRow

__all__ = ["RemovalView", "Removals", "disconnect_purge_time"]

log = structlog.get_logger("ingestion.removals")


@dataclass(frozen=True)
class RemovalView:
    user_id: str
    provider: str
    reason: str
    requested_at: datetime
    purge_after: datetime | None
    settled_at: datetime | None
    purged: int

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "requestedAt": _iso(self.requested_at),
            "purgeAfter": _iso(self.purge_after),
            "settledAt": _iso(self.settled_at),
            "purged": self.purged,
        }


class Removals:
    """`ingestion_removals`: which pairs are stopped, and what is left to do for them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def stopped(
        self, user_id: str, provider: str, account_ref: str | None, *, lift: bool = True
    ) -> bool:
        """Whether the pair must not sync. `account_ref` is the id of the account row the pair
        syncs with now (None when it is gone). With `lift`, a disconnect whose account is back,
        and a settled removal whose account row was replaced (the product unlinked and linked
        it again), are lifted here; token refreshes keep the row's id and lift nothing.
        Without `lift` (the check before each page of a running sync): one indexed read."""
        if account_ref is None or not lift:
            async with self.db.engine.connect() as connection:
                found = await connection.execute(
                    select(RemovalRow.user_id)
                    .where(RemovalRow.user_id == user_id, RemovalRow.provider == provider)
                    .limit(1)
                )
                return found.first() is not None
        async with self.db.session() as session:
            row = await session.get(RemovalRow, (user_id, provider))
            if row is None:
                return False
            if account_ref is None or not lift:
                return True
            if row.reason == "disconnected" or (
                row.settled_at is not None and account_ref != row.account_ref
            ):
                await session.delete(row)
                log.info("removal lifted: the account is connected again", provider=provider)
                return False
            return True

    async def lift(self, user_id: str, provider: str) -> bool:
        """Resume syncing the pair (`accounts add`, `connect`); False when it was not removed.
        An unfinished purge is not cancelled: the removal stays until it settles."""
        async with self.db.session() as session:
            row = await session.get(RemovalRow, (user_id, provider))
            if row is None or (row.settled_at is None and row.purge_after is not None):
                return False
            await session.delete(row)
            return True

    async def get(self, user_id: str, provider: str) -> RemovalView | None:
        async with self.db.session() as session:
            row = await session.get(RemovalRow, (user_id, provider))
            return _view(row) if row else None

    async def all(self, users: Sequence[str] | None = None) -> list[RemovalView]:
        """Every removal (of `users` when given)."""
        query = select(RemovalRow)
        if users is not None:
            query = query.where(RemovalRow.user_id.in_(list(users)))
        async with self.db.session() as session:
            rows = (await session.execute(query)).scalars()
            return [_view(r) for r in rows]

    async def mark(
        self,
        user_id: str,
        provider: str,
        *,
        reason: str,
        now: datetime,
        purge_after: datetime | None,
        account_ref: str | None,
    ) -> None:
        """Record (or renew) a removal. A purge already asked for is never cancelled by a
        later request without one; the earliest purge time wins."""
        async with self.db.session() as session:
            row = await session.get(RemovalRow, (user_id, provider))
            if row is None:
                session.add(
                    RemovalRow(
                        user_id=user_id,
                        provider=provider,
                        reason=reason,
                        requested_at=now,
                        purge_after=purge_after,
                        settled_at=None,
                        purged=0,
                        account_ref=account_ref,
                    )
                )
                return
            if row.reason == "disconnected" or reason != "disconnected":
                row.reason = reason
            if purge_after is not None and (
                row.purge_after is None or purge_after < row.purge_after
            ):
                row.purge_after = purge_after
            row.requested_at = now
            row.settled_at = None
            if account_ref is not None:
                row.account_ref = account_ref

    async def mark_disconnected(
        self, user_id: str, provider: str, now: datetime, purge_after: datetime | None
    ) -> bool:
        """Record a product-side disconnect unless the pair is already removed; True if new."""
        async with self.db.session() as session:
            if await session.get(RemovalRow, (user_id, provider)) is not None:
                return False
            session.add(
                RemovalRow(
                    user_id=user_id,
                    provider=provider,
                    reason="disconnected",
                    requested_at=now,
                    purge_after=purge_after,
                    settled_at=None,
                    purged=0,
                    account_ref=None,
                )
            )
            return True

    async def unsettled(self, now: datetime) -> list[RemovalView]:
        """Removals with work left that may be done now (a disconnect only once its purge is
        due)."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(RemovalRow).where(
                        RemovalRow.settled_at.is_(None),
                        (RemovalRow.reason != "disconnected") | (RemovalRow.purge_after <= now),
                    )
                )
            ).scalars()
            return [_view(r) for r in rows]

    async def settled(self, user_id: str, provider: str, now: datetime, purged: int) -> None:
        async with self.db.session() as session:
            row = await session.get(RemovalRow, (user_id, provider))
            if row is not None:
                row.settled_at = now
                row.purged += purged

    async def add_purged(self, user_id: str, provider: str, count: int) -> None:
        async with self.db.session() as session:
            row = await session.get(RemovalRow, (user_id, provider))
            if row is not None:
                row.purged += count


def _view(row: RemovalRow) -> RemovalView:
    return RemovalView(
        row.user_id,
        row.provider,
        row.reason,
        row.requested_at,
        row.purge_after,
        row.settled_at,
        row.purged,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def disconnect_purge_time(settings: Settings, now: datetime) -> datetime | None:
    """When the records of a pair disconnected at `now` are purged (None = never)."""
    if settings.forget_after_disconnect is None:
        return None
    return now + timedelta(seconds=settings.forget_after_disconnect)
