"""Connected accounts in Better Auth's `"account"` table (and their `"user"` rows).

Reads and updates rows the product's server wrote; creates rows only for `accounts add` and
`connect`. Nothing here returns a token to a caller that prints: `AccountSummary` has none.

The token columns may be encrypted in Better Auth's format (`encryption.py`): read them only
through `read_tokens` and write them only with a `TokenCipher` (`save_account`, `seal_tokens`),
so that with a secret configured every token this service writes is encrypted.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, case, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ingestion.errors import ConfigurationError
from ingestion.storage.encryption import PLAIN_TEXT, TokenCipher, UnreadableToken
from ingestion.storage.models import Account, RemovalRow, SyncStateRow, User

__all__ = [
    "AccountSummary",
    "DueAccount",
    "StoredTokens",
    "UnreadableTokens",
    "account_exists",
    "account_exists_statement",
    "due_page",
    "due_page_statement",
    "find_account",
    "find_account_statement",
    "fingerprint",
    "list_accounts",
    "orphaned_pairs",
    "read_tokens",
    "save_account",
    "seal_tokens",
]


@dataclass(frozen=True)
class StoredTokens:
    """The decrypted tokens of one account row (never printed, never logged)."""

    access_token: str
    refresh_token: str | None
    #: Columns still in plain text although a secret is configured (to be written back sealed).
    plain: tuple[str, ...]

    def __repr__(self) -> str:
        return f"StoredTokens(plain={self.plain!r})"


class UnreadableTokens(ConfigurationError):
    """The configured Better Auth secret does not decrypt the account's tokens. The account's
    syncs fail (status `error`, not retried) until the setting is fixed; nothing is refreshed."""


def read_tokens(account: Account, cipher: TokenCipher) -> StoredTokens:
    """Decrypt the account's tokens; plain values are returned as they are.

    Raises `UnreadableTokens` (one line naming the setting, never a value) when a column looks
    encrypted and the configured secrets do not decrypt it.
    """
    try:
        access = cipher.open(account.access_token or "", "accessToken")
        refresh = cipher.open(account.refresh_token or "", "refreshToken") or None
    except UnreadableToken as exc:
        raise UnreadableTokens(
            f"cannot read the tokens of the {account.provider_id} account of user "
            f"{account.user_id!r}: {exc}"
        ) from None
    plain = tuple(
        name
        for name, stored in (
            ("accessToken", account.access_token),
            ("refreshToken", account.refresh_token),
        )
        if cipher.needs_sealing(stored)
    )
    return StoredTokens(access_token=access, refresh_token=refresh, plain=plain)


def seal_tokens(
    account: Account,
    cipher: TokenCipher,
    *,
    access_token: str | None = None,
    refresh_token: str | None = None,
) -> None:
    """Store new tokens (each one given replaces its column) encrypted with `cipher`, and
    encrypt the columns that are still plain: the row ends fully encrypted whenever a secret is
    set. The caller commits."""
    if access_token is not None:
        account.access_token = cipher.seal(access_token)
    if refresh_token is not None:
        account.refresh_token = cipher.seal(refresh_token)
    # A plain value is its own token: encrypting it in place changes nothing it means.
    if account.access_token and cipher.needs_sealing(account.access_token):
        account.access_token = cipher.seal(account.access_token)
    if account.refresh_token and cipher.needs_sealing(account.refresh_token):
        account.refresh_token = cipher.seal(account.refresh_token)


@dataclass(frozen=True)
class AccountSummary:
    """An account as `accounts list` and `status` show it: no tokens."""

    id: str
    user_id: str
    provider_id: str
    account_id: str
    scope: str | None
    has_refresh_token: bool
    access_token_expires_at: datetime | None
    updated_at: datetime


def fingerprint(account: Account) -> str:
    """A digest of the account's tokens: changes whenever the tokens are replaced."""
    return _print(account.access_token, account.refresh_token)


def find_account_statement(user_id: str, provider_id: str) -> Select[Account]:
    """The user's most recently updated account for `provider_id` (the `"userId"` index)."""
    return (
        select(Account)
        .where(Account.user_id == user_id, Account.provider_id == provider_id)
        .order_by(Account.updated_at.desc())
        .limit(1)
    )


def account_exists_statement(user_id: str, provider_id: str) -> Select[Any]:
    """The id of the user's most recently updated account of `provider_id`, if any (the
    `"userId"` index; no token read)."""
    return (
        select(Account.id)
        .where(Account.user_id == user_id, Account.provider_id == provider_id)
        .order_by(Account.updated_at.desc())
        .limit(1)
    )


async def account_exists(connection: AsyncConnection, user_id: str, provider_id: str) -> str | None:
    """One indexed read: `POST /v1/sync` checks the account this way before it enqueues; the
    account row's id (a removal compares it), None when there is none."""
    result = await connection.execute(account_exists_statement(user_id, provider_id))
    found = result.first()
    return None if found is None else str(found[0])


async def find_account(session: AsyncSession, user_id: str, provider_id: str) -> Account | None:
    """The user's most recently updated account for `provider_id`."""
    result = await session.execute(find_account_statement(user_id, provider_id))
    return result.scalar_one_or_none()


def due_page_statement(
    provider: str, account_provider: str, after: str | None, limit: int
) -> Select[Any]:
    """One keyset page of the scheduler: accounts of `account_provider` with user ids after
    `after`, in user id order (the `"userId"` index), each joined to its `provider` sync
    state (primary key). Tokens are read only for pairs waiting on a reconnect, to compare
    fingerprints; every other row is four short columns."""
    waiting = SyncStateRow.status == "reauth_required"
    joined = and_(SyncStateRow.user_id == Account.user_id, SyncStateRow.provider == provider)
    if after is not None:  # the same keyset on both sides: the join starts at the page too
        joined = and_(joined, SyncStateRow.user_id > after)
    query = (
        select(
            Account.user_id,
            Account.id,
            SyncStateRow.last_sync_time,
            SyncStateRow.reauth_fingerprint,
            case((waiting, Account.access_token)).label("access_token"),
            case((waiting, Account.refresh_token)).label("refresh_token"),
            waiting.label("waiting"),
        )
        .outerjoin(SyncStateRow, joined)
        .where(Account.provider_id == account_provider)
        .order_by(Account.user_id, Account.updated_at.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(Account.user_id > after)
    return query


class DueAccount(NamedTuple):
    """A user the scheduler may enqueue: the account row it syncs with (removals compare its
    id) and its pair's last successful sync (push stretches the polling interval)."""

    user_id: str
    account_id: str
    last_sync_time: datetime | None


async def due_page(
    session: AsyncSession, provider: str, account_provider: str, after: str | None, limit: int
) -> tuple[list[DueAccount], str | None]:
    """Users of one scheduler page who do not wait on a reconnect, and the keyset position
    after the page (None: no more accounts).

    A user with several accounts of one provider counts once, judged by the most recently
    updated one (as `find_account` picks it). A reconnect changes the tokens, hence the
    fingerprint, and schedules the pair again.
    """
    rows = (
        await session.execute(due_page_statement(provider, account_provider, after, limit))
    ).all()
    due: list[DueAccount] = []
    seen: str | None = after
    for row in rows:
        if row.user_id == seen:
            continue  # an older account of the user just judged
        seen = row.user_id
        if row.waiting and row.reauth_fingerprint == _print(row.access_token, row.refresh_token):
            continue
        due.append(DueAccount(row.user_id, row.id, row.last_sync_time))
    return due, (seen if len(rows) == limit else None)


async def orphaned_pairs(session: AsyncSession, provider: str, account_provider: str) -> list[str]:
    """Users with a `provider` sync state but no `account_provider` account row and no removal
    recorded: accounts the product deleted since the last tick (an anti-join over the state
    table's primary key and the account and removal indexes)."""
    query = (
        select(SyncStateRow.user_id)
        .where(
            SyncStateRow.provider == provider,
            ~exists().where(
                Account.user_id == SyncStateRow.user_id,
                Account.provider_id == account_provider,
            ),
            ~exists().where(
                RemovalRow.user_id == SyncStateRow.user_id,
                RemovalRow.provider == provider,
            ),
        )
        .order_by(SyncStateRow.user_id)
    )
    return list((await session.scalars(query)).all())


def _print(access_token: str | None, refresh_token: str | None) -> str:
    material = f"{access_token or ''}\x00{refresh_token or ''}"
    return hashlib.sha256(material.encode()).hexdigest()[:16]


async def ensure_user(session: AsyncSession, user_id: str, email: str | None = None) -> User:
    user = await session.get(User, user_id)
    if user is None:
        user = User(id=user_id, name=user_id, email=email or f"{user_id}@ingestion.local")
        session.add(user)
        await session.flush()
    return user


async def save_account(
    session: AsyncSession,
    *,
    user_id: str,
    provider_id: str,
    access_token: str,
    refresh_token: str | None = None,
    expires_at: datetime | None = None,
    refresh_token_expires_at: datetime | None = None,
    scope: str | None = None,
    account_id: str | None = None,
    email: str | None = None,
    cipher: TokenCipher = PLAIN_TEXT,
) -> Account:
    """Create or replace the tokens of the user's account for `provider_id`.

    The tokens are written with `cipher`: pass `TokenCipher.from_settings(settings)` (the
    plain default is for tests that write rows as a product without encryption would).
    """
    await ensure_user(session, user_id, email)
    account = await find_account(session, user_id, provider_id)
    now = datetime.now(UTC)
    if account is None:
        account = Account(
            id=secrets.token_hex(16),
            account_id=account_id or user_id,
            provider_id=provider_id,
            user_id=user_id,
            created_at=now,
        )
        session.add(account)
    elif account_id:
        account.account_id = account_id
    account.access_token = cipher.seal(access_token)
    account.refresh_token = cipher.seal(refresh_token) if refresh_token else None
    account.access_token_expires_at = expires_at
    account.refresh_token_expires_at = refresh_token_expires_at
    account.scope = scope
    account.updated_at = now
    await session.flush()
    return account


async def list_accounts(
    session: AsyncSession, provider_id: str | None = None
) -> list[AccountSummary]:
    query = select(Account).order_by(Account.user_id, Account.provider_id)
    if provider_id is not None:
        query = query.where(Account.provider_id == provider_id)
    rows = (await session.execute(query)).scalars().all()
    return [
        AccountSummary(
            id=a.id,
            user_id=a.user_id,
            provider_id=a.provider_id,
            account_id=a.account_id,
            scope=a.scope,
            has_refresh_token=bool(a.refresh_token),
            access_token_expires_at=a.access_token_expires_at,
            updated_at=a.updated_at,
        )
        for a in rows
        if a.provider_id != "credential"
    ]
