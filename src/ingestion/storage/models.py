"""Tables: Better Auth's `"user"` and `"account"` (read and updated, never altered) and ours.

Better Auth (through Prisma or Kysely) names its columns in camelCase and stores timestamps
without a time zone; `UTCDateTime` stores naive UTC and always hands back aware UTC datetimes.
Our own tables are prefixed `ingestion_`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Account",
    "Base",
    "DeliveredRow",
    "MemoryRow",
    "PushChannel",
    "RemovalRow",
    "SentHash",
    "SyncRun",
    "SyncStateRow",
    "UTCDateTime",
    "User",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC (as Better Auth does) and read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}  # noqa: RUF012 (SQLAlchemy's declared API)


class User(Base):
    """Better Auth `"user"`."""

    __tablename__ = "user"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text, unique=True)
    email_verified: Mapped[bool] = mapped_column("emailVerified", Boolean, default=False)
    image: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column("createdAt", UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        "updatedAt", UTCDateTime, default=_now, onupdate=_now
    )


class Account(Base):
    """Better Auth `"account"`: one connected provider account of a user, with its tokens."""

    __tablename__ = "account"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column("accountId", Text)
    provider_id: Mapped[str] = mapped_column("providerId", Text)
    user_id: Mapped[str] = mapped_column("userId", Text, ForeignKey("user.id", ondelete="CASCADE"))
    access_token: Mapped[str | None] = mapped_column("accessToken", Text, nullable=True)
    refresh_token: Mapped[str | None] = mapped_column("refreshToken", Text, nullable=True)
    id_token: Mapped[str | None] = mapped_column("idToken", Text, nullable=True)
    access_token_expires_at: Mapped[datetime | None] = mapped_column(
        "accessTokenExpiresAt", UTCDateTime, nullable=True
    )
    refresh_token_expires_at: Mapped[datetime | None] = mapped_column(
        "refreshTokenExpiresAt", UTCDateTime, nullable=True
    )
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    password: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column("createdAt", UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        "updatedAt", UTCDateTime, default=_now, onupdate=_now
    )


class SyncStateRow(Base):
    """`ingestion_sync_state`: the cursor and health of one (user, provider)."""

    __tablename__ = "ingestion_sync_state"
    #: Migration 000c: status pages by status, the aggregate, cursor ages (`storage.overview`).
    __table_args__ = (
        Index("ix_ingestion_sync_state_status_pair", "status", "user_id", "provider"),
        Index("ix_ingestion_sync_state_provider_status", "provider", "status", "last_sync_time"),
        Index("ix_ingestion_sync_state_provider_synced", "provider", "last_sync_time"),
    )

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: idle | running | ok | error | reauth_required | quota_exhausted
    status: Mapped[str] = mapped_column(String(32), default="idle")
    last_sync_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_item_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Provider cursor: historyId, syncToken, ETags, since_id, backfill checkpoint.
    cursor: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    items_fetched: Mapped[int] = mapped_column(Integer, default=0)
    items_upserted: Mapped[int] = mapped_column(Integer, default=0)
    items_deleted: Mapped[int] = mapped_column(Integer, default=0)
    #: When status is reauth_required: fingerprint of the account's tokens at that moment.
    #: The scheduler skips the account until the fingerprint changes (a reconnect).
    reauth_fingerprint: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)
    #: The engine's reconciliation state (migration 0003), stored with every cursor: the
    #: enumerations in progress, by scope prefix (`ingestion.reconcile.Reconciliation`).
    reconcile: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class SyncRun(Base):
    """`ingestion_sync_runs`: one row per sync attempt, for status pages and history."""

    __tablename__ = "ingestion_sync_runs"
    __table_args__ = (
        # History of a pair, newest first (pruning, status pages): migration 0005.
        Index("ix_ingestion_sync_runs_pair_id", "user_id", "provider", "id"),
        # The pair's run still marked running (`SyncStateStore.begin`): a handful of rows.
        Index(
            "ix_ingestion_sync_runs_running",
            "user_id",
            "provider",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: running | ok | error | deferred | reauth_required
    status: Mapped[str] = mapped_column(String(32), default="running")
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    upserted: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MemoryRow(Base):
    """`ingestion_memories`: the embedded memory store (used when MEMORY_ENGINE_URL is unset)."""

    __tablename__ = "ingestion_memories"
    __table_args__ = (
        Index("ix_ingestion_memories_user_source", "user_id", "source"),
        Index("ix_ingestion_memories_search_key", "search_key", unique=True),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    content: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)
    #: Stable integer key of the row in the SQLite full-text index (migration 0002); set by
    #: the embedded store from the id (`ingestion.memory.search.search_key`).
    search_key: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class SentHash(Base):
    """`ingestion_sent_hashes`: what the HTTP sink last sent per record, to skip unchanged."""

    __tablename__ = "ingestion_sent_hashes"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    record_id: Mapped[str] = mapped_column(Text, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class DeliveredRow(Base):
    """`ingestion_delivered` (migration 0003): every record the sink accepted and that was not
    deleted since, per (user, provider), whichever the sink. `generation` is the enumeration
    that last delivered it (0 = none); `occurred_at` is NULL when unknown (rows carried over
    from before the table existed), which keeps the record out of time-bounded sweeps."""

    __tablename__ = "ingestion_delivered"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    source_id: Mapped[str] = mapped_column(Text, primary_key=True)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class RemovalRow(Base):
    """`ingestion_removals` (migration 0006): a (user, provider) the service stopped syncing.

    Written by `accounts remove`, `users forget` and when the product deleted the account. While
    the row exists the pair is not synced (a job for it ends without writing). `purge_after` is
    when its delivered records are deleted from the memory engine (NULL = kept); `settled_at` is
    set once that and the pair's state removal are complete. `account_ref` is the account row at
    removal.
    """

    __tablename__ = "ingestion_removals"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: removed | forgotten | disconnected
    reason: Mapped[str] = mapped_column(String(32))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Records deleted from the memory engine so far by this removal.
    purged: Mapped[int] = mapped_column(Integer, default=0)
    #: Id of the account row at removal: a new row (the product linked the account again)
    #: lifts a settled removal; a token refresh keeps the id.
    account_ref: Mapped[str | None] = mapped_column(Text, nullable=True)


class PushChannel(Base):
    """`ingestion_push_channels` (migration 000d): one push subscription of a (user, provider).

    Gmail: one row per user (`channel_id` = `gmail:{userId}`, `resource` = the mailbox address
    from getProfile, lower case, which maps Pub/Sub's `emailAddress` back to the user).
    Calendar: one row per watched calendar (`channel_id` random, `resource` = calendar id,
    `resource_id` = Google's id of the watched resource, needed by `channels.stop`). Only a
    SHA-256 of a channel's secret token is kept."""

    __tablename__ = "ingestion_push_channels"
    __table_args__ = (
        Index("ix_ingestion_push_channels_user", "provider", "user_id"),
        Index("ix_ingestion_push_channels_resource", "provider", "resource"),
    )

    channel_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(512))
    resource_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expiration: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Gmail: the mailbox history id the watch answered with.
    history_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: active | failing (the last renewal failed; polling is back on the cron schedule)
    status: Mapped[str] = mapped_column(String(16), default="active")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
