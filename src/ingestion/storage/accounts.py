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

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ingestion.errors import ConfigurationError
from ingestion.storage.encryption import PLAIN_TEXT, TokenCipher, UnreadableToken
from ingestion.storage.models import Account, User

__all__ = [
    "AccountSummary",
    "StoredTokens",
    "UnreadableTokens",
    "find_account",
    "fingerprint",
    "list_accounts",
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
    material = f"{account.access_token or ''}\x00{account.refresh_token or ''}"
    return hashlib.sha256(material.encode()).hexdigest()[:16]


async def find_account(session: AsyncSession, user_id: str, provider_id: str) -> Account | None:
    """The user's most recently updated account for `provider_id`."""
    result = await session.execute(
        select(Account)
        .where(Account.user_id == user_id, Account.provider_id == provider_id)
        .order_by(Account.updated_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


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
