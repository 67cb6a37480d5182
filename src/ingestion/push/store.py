"""Push channels in the database (`ingestion_push_channels`) and the push status they give.

A (user, provider) has push `active` when it has at least one channel, none failing and none
past its expiration; `expired` when a channel expired or its last renewal failed; `off` when
it has none (or push is not configured). Only an `active` pair has its polling stretched to
`PUSH_POLL_INTERVAL` (`ingestion.scheduler`), so a dead channel falls back to the cron schedule
by itself, without anyone noticing it died.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, select, update

from ingestion.storage.db import Database
from ingestion.storage.models import PushChannel

__all__ = ["ChannelStore", "ChannelView", "PushStatus", "summarize", "token_digest"]

PushStatus = Literal["active", "expired", "off"]

_ERROR_LIMIT = 500


def token_digest(token: str) -> str:
    """What is stored of a channel's secret token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ChannelView:
    channel_id: str
    provider: str
    user_id: str
    resource: str
    resource_id: str | None
    token_sha256: str | None
    expiration: datetime | None
    history_id: str | None
    status: str
    last_error: str | None
    renewed_at: datetime

    @classmethod
    def of(cls, row: PushChannel) -> ChannelView:
        return cls(
            row.channel_id,
            row.provider,
            row.user_id,
            row.resource,
            row.resource_id,
            row.token_sha256,
            row.expiration,
            row.history_id,
            row.status,
            row.last_error,
            row.renewed_at,
        )

    def token_matches(self, token: str) -> bool:
        """Constant-time comparison of a presented token with the stored digest."""
        if self.token_sha256 is None:
            return False
        return hmac.compare_digest(token_digest(token), self.token_sha256)

    def healthy(self, now: datetime) -> bool:
        return self.status == "active" and (self.expiration is None or self.expiration > now)


def summarize(channels: Iterable[ChannelView], now: datetime) -> PushStatus:
    """The push status of one (user, provider) from its channels."""
    found = list(channels)
    if not found:
        return "off"
    return "active" if all(c.healthy(now) for c in found) else "expired"


class ChannelStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, channel_id: str) -> ChannelView | None:
        async with self.db.session() as session:
            row = await session.get(PushChannel, channel_id)
            return ChannelView.of(row) if row else None

    async def of_user(self, provider: str, user_id: str) -> list[ChannelView]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(PushChannel)
                .where(PushChannel.provider == provider, PushChannel.user_id == user_id)
                .order_by(PushChannel.resource)
            )
            return [ChannelView.of(r) for r in rows.scalars()]

    async def by_resource(self, provider: str, resource: str) -> list[ChannelView]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(PushChannel).where(
                    PushChannel.provider == provider, PushChannel.resource == resource
                )
            )
            return [ChannelView.of(r) for r in rows.scalars()]

    async def statuses(
        self,
        now: datetime,
        providers: Sequence[str] | None = None,
        users: Sequence[str] | None = None,
    ) -> dict[tuple[str, str], PushStatus]:
        """`{(user_id, provider): status}` for every pair that has channels (of `providers`
        and `users` when given: a status page reads only its page's users)."""
        query = select(PushChannel)
        if providers is not None:
            query = query.where(PushChannel.provider.in_(list(providers)))
        if users is not None:
            query = query.where(PushChannel.user_id.in_(list(users)))
        grouped: dict[tuple[str, str], list[ChannelView]] = {}
        async with self.db.session() as session:
            for row in (await session.execute(query)).scalars():
                grouped.setdefault((row.user_id, row.provider), []).append(ChannelView.of(row))
        return {pair: summarize(found, now) for pair, found in grouped.items()}

    async def save(
        self,
        *,
        channel_id: str,
        provider: str,
        user_id: str,
        resource: str,
        renewed_at: datetime,
        resource_id: str | None = None,
        token_sha256: str | None = None,
        expiration: datetime | None = None,
        history_id: str | None = None,
        status: str = "active",
    ) -> None:
        """Create or replace a channel (healthy unless `status` says otherwise)."""
        async with self.db.session() as session:
            row = await session.get(PushChannel, channel_id)
            if row is None:
                row = PushChannel(channel_id=channel_id)
                session.add(row)
            row.provider = provider
            row.user_id = user_id
            row.resource = resource
            row.resource_id = resource_id
            row.token_sha256 = token_sha256
            row.expiration = expiration
            row.history_id = history_id
            row.status = status
            row.last_error = None
            row.renewed_at = renewed_at

    async def mark_failing(self, provider: str, user_id: str, error: str) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(PushChannel)
                .where(PushChannel.provider == provider, PushChannel.user_id == user_id)
                .values(status="failing", last_error=error[:_ERROR_LIMIT])
            )

    async def touch(self, channel_id: str, when: datetime) -> None:
        """A verified notification arrived on the channel."""
        async with self.db.session() as session:
            await session.execute(
                update(PushChannel)
                .where(PushChannel.channel_id == channel_id)
                .values(last_message_at=when)
            )

    async def remove(self, channel_ids: Iterable[str]) -> None:
        ids = list(channel_ids)
        if not ids:
            return
        async with self.db.session() as session:
            await session.execute(delete(PushChannel).where(PushChannel.channel_id.in_(ids)))
