"""Reading the (user, provider) pairs at scale: keyset pages and the aggregate.

Nothing here reads every row into Python. A page of the pairs (`pair_page`) is found by
keyset over indexes, in (user id, provider) order; the aggregate (`aggregate`) is one
index-only scan grouped in SQL plus one offset read per provider for the median cursor age.

A pair is a connected account's provider (Gmail and Calendar share the Google account) or a
sync state row left without an account; both kinds are listed, as `ingestion status` always did.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, tuple_, union
from sqlalchemy.ext.asyncio import AsyncSession

from ingestion.storage.models import Account, SyncStateRow
from ingestion.storage.state import StateView

__all__ = [
    "STATUSES",
    "Aggregate",
    "InvalidStatusQuery",
    "PairPage",
    "aggregate",
    "aggregate_statement",
    "decode_cursor",
    "encode_cursor",
    "median_statement",
    "pair_page",
    "status_page_statement",
    "users_page_statement",
]

#: The values `ingestion_sync_state.status` takes.
STATUSES = ("idle", "running", "ok", "error", "reauth_required")


class InvalidStatusQuery(ValueError):
    """A status query this service cannot answer: a cursor it did not hand out, a bad limit,
    an unknown provider or status. The message says which."""


def encode_cursor(user_id: str, provider: str) -> str:
    raw = json.dumps([user_id, provider], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    if len(cursor) > 2000:
        raise InvalidStatusQuery("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error):
        raise InvalidStatusQuery("cursor is not one this service handed out") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
    ):
        raise InvalidStatusQuery("cursor is not one this service handed out")
    return value[0], value[1]


@dataclass(frozen=True)
class PairPage:
    #: (state or an empty one, account provider when connected) in (user, provider) order.
    pairs: list[tuple[StateView, str | None]]
    #: Where the next page starts; None when this was the last.
    next_cursor: str | None


def _after(cursor: tuple[str, str] | None) -> Any:
    if cursor is None:
        return None
    return tuple_(SyncStateRow.user_id, SyncStateRow.provider) > tuple_(*cursor)


def status_page_statement(
    status: str, provider: str | None, cursor: tuple[str, str] | None, limit: int
) -> Select[SyncStateRow]:
    """Pairs in one status, in keyset order (index `(status, user_id, provider)`)."""
    query = select(SyncStateRow).where(SyncStateRow.status == status)
    if provider is not None:
        query = query.where(SyncStateRow.provider == provider)
    if cursor is not None:
        query = query.where(
            or_(
                SyncStateRow.user_id > cursor[0],
                and_(SyncStateRow.user_id == cursor[0], SyncStateRow.provider > cursor[1]),
            )
        )
    return query.order_by(SyncStateRow.user_id, SyncStateRow.provider).limit(limit)


def users_page_statement(
    account_providers: Iterable[str], providers: Iterable[str], after: str | None, limit: int
) -> Select[Any]:
    """The next `limit` user ids (from `after`, inclusive) that have an account of one of
    `account_providers` or a sync state row of one of `providers`: two index-ordered reads
    (the `"userId"` index, the state's primary key), merged."""
    accounts = select(Account.user_id.label("user_id")).where(
        Account.provider_id.in_(list(account_providers))
    )
    states = select(SyncStateRow.user_id.label("user_id")).where(
        SyncStateRow.provider.in_(list(providers))
    )
    if after is not None:
        accounts = accounts.where(Account.user_id >= after)
        states = states.where(SyncStateRow.user_id >= after)
    # Each side as a subquery: SQLite refuses LIMIT inside a bare compound SELECT.
    # DISTINCT: a user has several accounts and states; `limit` counts users.
    first = accounts.distinct().order_by(Account.user_id).limit(limit).subquery()
    second = states.distinct().order_by(SyncStateRow.user_id).limit(limit).subquery()
    merged = union(select(first.c.user_id), select(second.c.user_id)).subquery()
    return select(merged.c.user_id).order_by(merged.c.user_id).limit(limit)


async def pair_page(
    session: AsyncSession,
    providers_of: dict[str, list[str]],
    *,
    limit: int,
    cursor: tuple[str, str] | None = None,
    provider: str | None = None,
    status: str | None = None,
) -> PairPage:
    """One page of pairs after `cursor`, optionally of one provider and one status.

    `providers_of` maps an account provider to the providers it serves. A page may hold
    fewer than `limit` pairs (an `idle` filter reads at most `16 * limit` users per page);
    follow `next_cursor` until it is None.
    """
    if limit <= 0:
        return PairPage([], None)
    serves = {p: ap for ap, ps in providers_of.items() for p in ps}
    providers = [provider] if provider is not None else sorted(serves)
    if status is not None and status != "idle":
        rows = (
            (await session.execute(status_page_statement(status, provider, cursor, limit + 1)))
            .scalars()
            .all()
        )
        more = len(rows) > limit
        rows = list(rows[:limit])
        connected = await _connected(session, {r.user_id for r in rows})
        found: list[tuple[StateView, str | None]] = []
        for row in rows:
            linked = serves.get(row.provider)
            found.append(
                (StateView.of(row), linked if linked in connected.get(row.user_id, ()) else None)
            )
        last = found[-1][0] if found else None
        return PairPage(
            found, encode_cursor(last.user_id, last.provider) if more and last else None
        )

    account_providers = sorted({serves[p] for p in providers if p in serves})
    pairs: list[tuple[StateView, str | None]] = []
    after_user = cursor[0] if cursor else None
    budget = 16 * limit
    while True:
        users = list(
            (
                await session.execute(
                    users_page_statement(account_providers, providers, after_user, limit + 1)
                )
            ).scalars()
        )
        budget -= len(users)
        exhausted = len(users) <= limit
        if not users:
            return PairPage(pairs, None)
        for pair in await _pairs_of(session, users, providers, serves):
            key = (pair[0].user_id, pair[0].provider)
            if cursor is not None and key <= cursor:
                continue
            if status is not None and pair[0].status != status:
                continue
            pairs.append(pair)
            if len(pairs) == limit:
                return PairPage(pairs, encode_cursor(*key))
        if exhausted:
            return PairPage(pairs, None)
        last_user = users[-1]
        cursor = (last_user, "\uffff")  # everything of this user was read
        after_user = last_user
        if budget <= 0:
            return PairPage(pairs, encode_cursor(*cursor))


async def _connected(session: AsyncSession, users: set[str]) -> dict[str, set[str]]:
    """Account providers connected per user (the `"userId"` index)."""
    if not users:
        return {}
    rows = await session.execute(
        select(Account.user_id, Account.provider_id).where(Account.user_id.in_(sorted(users)))
    )
    connected: dict[str, set[str]] = {}
    for user_id, provider_id in rows:
        connected.setdefault(user_id, set()).add(provider_id)
    return connected


async def _pairs_of(
    session: AsyncSession, users: list[str], providers: list[str], serves: dict[str, str]
) -> list[tuple[StateView, str | None]]:
    """Every pair of `users` among `providers`, in (user, provider) order."""
    connected = await _connected(session, set(users))
    states = {
        (r.user_id, r.provider): r
        for r in (
            await session.execute(
                select(SyncStateRow).where(
                    SyncStateRow.user_id.in_(users), SyncStateRow.provider.in_(providers)
                )
            )
        ).scalars()
    }
    pairs: list[tuple[StateView, str | None]] = []
    for user_id in users:
        mine = connected.get(user_id, set())
        for provider in sorted(providers):
            account_provider = serves.get(provider)
            linked = account_provider if account_provider in mine else None
            row = states.get((user_id, provider))
            if row is None and linked is None:
                continue
            state = StateView.of(row) if row else StateView.empty(user_id, provider)
            pairs.append((state, linked))
    return pairs


# --- the aggregate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    #: provider -> status -> pairs with a sync state row.
    counts: dict[str, dict[str, int]]
    #: provider -> (oldest, newest, median) last successful sync, None when never.
    synced: dict[str, tuple[datetime, datetime, datetime]]
    #: When it was computed.
    at: datetime

    def cursor_ages(self, now: datetime) -> dict[str, dict[str, float]]:
        """provider -> {max, median, min} seconds since the last successful sync."""
        return {
            provider: {
                "max": max(0.0, (now - oldest).total_seconds()),
                "median": max(0.0, (now - median).total_seconds()),
                "min": max(0.0, (now - newest).total_seconds()),
            }
            for provider, (oldest, newest, median) in self.synced.items()
        }


def aggregate_statement() -> Select[str, str, int, int, datetime | None, datetime | None]:
    """Counts by provider and status, with the oldest and newest successful sync: one
    index-only scan of `(provider, status, last_sync_time)`."""
    return select(
        SyncStateRow.provider,
        SyncStateRow.status,
        func.count(),
        func.count(SyncStateRow.last_sync_time),
        func.min(SyncStateRow.last_sync_time),
        func.max(SyncStateRow.last_sync_time),
    ).group_by(SyncStateRow.provider, SyncStateRow.status)


def median_statement(provider: str, synced: int) -> Select[Any]:
    """The median last successful sync of `provider`: one read at an offset of the
    `(provider, last_sync_time)` index."""
    return (
        select(SyncStateRow.last_sync_time)
        .where(SyncStateRow.provider == provider, SyncStateRow.last_sync_time.is_not(None))
        .order_by(SyncStateRow.last_sync_time)
        .offset(max(0, (synced - 1) // 2))
        .limit(1)
    )


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite hands aggregates back as text
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def aggregate(session: AsyncSession) -> Aggregate:
    counts: dict[str, dict[str, int]] = {}
    bounds: dict[str, list[Any]] = {}
    for provider, status, n, synced, oldest, newest in await session.execute(aggregate_statement()):
        counts.setdefault(provider, {})[status] = int(n)
        if synced:
            entry = bounds.setdefault(provider, [0, None, None])
            entry[0] += int(synced)
            oldest, newest = _aware(oldest), _aware(newest)
            entry[1] = oldest if entry[1] is None else min(entry[1], oldest)
            entry[2] = newest if entry[2] is None else max(entry[2], newest)
    synced_at: dict[str, tuple[datetime, datetime, datetime]] = {}
    for provider, (synced, oldest, newest) in bounds.items():
        median = (await session.execute(median_statement(provider, synced))).scalar()
        synced_at[provider] = (oldest, newest, _aware(median) if median is not None else oldest)
    return Aggregate(counts, synced_at, datetime.now(UTC))
