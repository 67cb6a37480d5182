"""Access tokens for connected accounts: refresh, rotation, locking, re-authentication (§7, §9).

`TokenService.source(user_id, account_provider)` gives the `TokenSource` a provider calls.
The tokens live in Better Auth's `"account"` row (`"providerId"` google | github | twitter);
the provider's `auth.py` (found through `providers.registry.auth_for`) says how to refresh.

Guarantees:

- **One refresh per account, however many workers.** A refresh happens only inside a
  transaction that first locks the account row: `SELECT … FOR UPDATE` on PostgreSQL (holds
  across processes and hosts), `BEGIN IMMEDIATE` on SQLite (the database file admits one
  writer). After taking the lock the row is read again; when another worker already refreshed
  (the token is fresh, or differs from the one an API refused) its token is used as it is.
- **Nothing issued is lost.** The new access token, its expiry and the rotated refresh token are
  written in that same transaction and committed before the new token is returned. If that
  write fails after the provider answered (the stored refresh token may be spent already),
  the issued tokens are written again in new transactions (`_KEEP_ATTEMPTS`), unless the row
  changed meanwhile; only then does the caller get a `RetryableError` that says so.
- **Bounded.** Each token request times out after `TOKEN_REQUEST_TIMEOUT`; transient failures
  (5xx, 408, 429, network, `server_error`, `temporarily_unavailable`) are retried with
  exponential backoff within a fixed budget; a waiter gives up after a bounded lock wait.
  Exhausted, the caller gets `RetryableError` (the job is retried later).
- **Dead grants are final.** A refusal of the refresh token (`invalid_grant`,
  `bad_refresh_token`, X's spent-token `invalid_request`, a bare 400/401) is checked against
  a fresh read of the row (someone may have rotated it meanwhile); if it stands,
  `ReauthRequired` says so and what to run. A refresh whose answer was lost after the provider
  rotated ends here too: the retry with the old token is refused, and the message says why.
- Tokens without expiry (GitHub classic tokens, personal access tokens) are used as they
  are; a 401 on a token that cannot be refreshed is `ReauthRequired`.
- **Encrypted like the product's.** With `BETTER_AUTH_SECRET(S)` set the token columns are
  read and written in Better Auth's encrypted format (`storage/encryption.py`); a row still in
  plain text is used as it is and written back encrypted (under the row lock). A row the
  secrets do not decrypt fails the sync with a `ConfigurationError` (not retried, no refresh).

Tokens and client secrets never appear in a log line or an error message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import stamina
import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from ingestion import metrics
from ingestion.clock import Clock
from ingestion.config import Settings
from ingestion.errors import PermanentError, ReauthRequired, RetryableError
from ingestion.providers.base import OAuthEndpoints
from ingestion.providers.registry import auth_for
from ingestion.storage.accounts import (
    StoredTokens,
    find_account,
    fingerprint,
    read_tokens,
    seal_tokens,
)
from ingestion.storage.db import Database
from ingestion.storage.encryption import TokenCipher
from ingestion.storage.models import Account
from ingestion.token_endpoint import (
    DeadGrant,
    TokenGrant,
    TransientTokenError,
    request_refresh,
)

__all__ = ["AccountTokens", "TokenService"]

log = structlog.get_logger("ingestion.tokens")

#: Token requests per refresh (the first try and its retries).
REFRESH_ATTEMPTS = 4
#: Longest backoff between two tries; a longer Retry-After defers the job instead.
REFRESH_WAIT_MAX = 2.0


@dataclass(frozen=True)
class _Current:
    access_token: str
    expires_at: datetime | None
    can_refresh: bool


class _Refused(Exception):
    """A dead grant, with a note on an earlier lost answer when there was one."""

    def __init__(self, grant: DeadGrant, note: str) -> None:
        super().__init__(str(grant))
        self.grant = grant
        self.note = note


def _current(account: Account, cipher: TokenCipher, tokens: StoredTokens | None = None) -> _Current:
    """What a caller of `access_token` needs, from the row (decrypted unless `tokens` is the
    row's `read_tokens` already)."""
    tokens = tokens or read_tokens(account, cipher)
    return _Current(
        access_token=tokens.access_token,
        expires_at=account.access_token_expires_at,
        can_refresh=bool(tokens.refresh_token),
    )


class AccountTokens:
    """The `TokenSource` of one (user, account provider) for one sync.

    Keeps the last token in memory and reads the row again only when it is due for a refresh.
    """

    def __init__(self, service: TokenService, user_id: str, account_provider: str) -> None:
        self.service = service
        self.user_id = user_id
        self.account_provider = account_provider
        self._current: _Current | None = None

    async def access_token(self) -> str:
        """A token valid for at least `TOKEN_REFRESH_MARGIN` seconds (refreshed if needed)."""
        if self._current is None or self.service.due(self._current):
            current = await self.service.load(self.user_id, self.account_provider)
            if self.service.due(current) and current.can_refresh:
                current = await self.service.refresh(self.user_id, self.account_provider)
            self._current = current
        return self._current.access_token

    async def refresh_after_unauthorized(self, rejected_token: str) -> str:
        """The API refused `rejected_token`: refresh once unless another worker already did."""
        self._current = await self.service.refresh(
            self.user_id, self.account_provider, rejected=rejected_token
        )
        return self._current.access_token


class TokenService:
    """Reads, refreshes and stores account tokens (see the module docstring)."""

    def __init__(
        self, settings: Settings, db: Database, http: httpx.AsyncClient, clock: Clock
    ) -> None:
        self.settings = settings
        self.db = db
        self.http = http
        self.clock = clock
        self.cipher = TokenCipher.from_settings(settings)
        #: Total seconds the token requests of one refresh may take, retries included.
        self.refresh_budget = 2 * settings.token_request_timeout + 5 * REFRESH_WAIT_MAX
        #: How long a worker waits for another one's refresh before giving up (retryable).
        self.lock_wait = self.refresh_budget + settings.token_request_timeout + 15

    def source(self, user_id: str, account_provider: str) -> AccountTokens:
        return AccountTokens(self, user_id, account_provider)

    # --- reading -------------------------------------------------------------------------------

    def due(self, current: _Current) -> bool:
        """The token expires within the safety margin (a token without expiry never does)."""
        if current.expires_at is None:
            return False
        margin = timedelta(seconds=self.settings.token_refresh_margin)
        return current.expires_at - margin <= self.clock.now()

    async def load(self, user_id: str, account_provider: str) -> _Current:
        async with self.db.session() as session:
            account = self._require(
                await find_account(session, user_id, account_provider), user_id, account_provider
            )
            tokens = read_tokens(account, self.cipher)
            current = _current(account, self.cipher, tokens)
        if tokens.plain:
            await self._seal_plain(user_id, account_provider)
        return current

    async def _seal_plain(self, user_id: str, account_provider: str) -> None:
        """Write the plain token columns back encrypted (a product part-way through enabling
        encryption). Under the row lock, from a fresh read: a concurrent writer's newer tokens
        are never overwritten, only re-encoded."""
        try:
            async with self._locked(user_id, account_provider) as (_session, row):
                if row is not None:
                    seal_tokens(row, self.cipher)
        except DBAPIError as exc:
            # Not needed for this sync: the next one writes it back.
            log.warning(
                "could not encrypt plain tokens in place",
                user_id=user_id,
                provider=account_provider,
                error=type(exc.orig).__name__,
            )
            return
        log.info("plain tokens written back encrypted", user_id=user_id, provider=account_provider)

    def _require(self, account: Account | None, user_id: str, account_provider: str) -> Account:
        if account is None or not account.access_token:
            raise PermanentError(
                f"user {user_id!r} has no connected {account_provider} account "
                f"(add one with `ingestion accounts add` or `ingestion connect`)"
            )
        return account

    # --- refreshing ----------------------------------------------------------------------------

    async def refresh(
        self, user_id: str, account_provider: str, *, rejected: str | None = None
    ) -> _Current:
        """Refresh under the account lock; see the module docstring for the guarantees.

        `rejected` is the access token an API answered 401 to: the refresh happens unless the
        stored token already differs from it. Without it, only a token due for refresh is.
        """
        endpoints = auth_for(account_provider)
        bound = log.bind(user_id=user_id, provider=account_provider)
        failure: _Refused | None = None
        fresh: _Current | None = None
        issued: TokenGrant | None = None
        spent_print = ""
        try:
            async with self._locked(user_id, account_provider) as (session, row):
                account = self._require(row, user_id, account_provider)
                tokens = read_tokens(account, self.cipher)
                current = _current(account, self.cipher, tokens)
                if (rejected is None and not self.due(current)) or (
                    rejected is not None and current.access_token != rejected
                ):
                    # Another worker refreshed while this one waited for the lock.
                    self._count(account_provider, "reused")
                    return current
                if not tokens.refresh_token:
                    if rejected is None:
                        return current  # nothing to refresh with: try the token as it is
                    self._count(account_provider, "reauth")
                    raise self._reauth(
                        account_provider,
                        user_id,
                        "the API refused the access token and the account has no refresh token",
                    )
                spent_print = fingerprint(account)
                try:
                    grant = await self._request(endpoints, tokens.refresh_token, bound)
                except _Refused as refused:
                    failure = refused
                else:
                    issued = grant
                    self._store(account, grant)
                    await session.flush()
                    fresh = _current(account, self.cipher)
                    # Leaving the block commits: the new tokens are durable before use.
        except DBAPIError as exc:
            if issued is not None:
                # The provider answered (a rotating one has already spent the stored refresh
                # token): the new tokens must not be lost with this transaction.
                return await self._keep_issued(user_id, account_provider, spent_print, issued, exc)
            self._count(account_provider, "failed")
            raise RetryableError(_lock_failure(account_provider, user_id, exc)) from None
        if failure is not None:
            return await self._after_dead_grant(user_id, account_provider, spent_print, failure)
        assert fresh is not None
        self._count(account_provider, "ok")
        bound.info("access token refreshed", expires_at=fresh.expires_at)
        return fresh

    async def _keep_issued(
        self,
        user_id: str,
        account_provider: str,
        spent_print: str,
        grant: TokenGrant,
        error: DBAPIError,
    ) -> _Current:
        """Store tokens the provider issued after the transaction that asked for them failed
        to write them: again, in new transactions, a few times (`_KEEP_ATTEMPTS`), unless the
        row changed meanwhile (a reconnect wrote newer tokens: those win)."""
        bound = log.bind(user_id=user_id, provider=account_provider)
        for attempt in range(_KEEP_ATTEMPTS):
            if attempt:
                await asyncio.sleep(_KEEP_BACKOFF_SECONDS * attempt)
            try:
                async with self._locked(user_id, account_provider) as (session, row):
                    account = self._require(row, user_id, account_provider)
                    if fingerprint(account) != spent_print:
                        bound.info("issued tokens not stored: the account changed meanwhile")
                        return _current(account, self.cipher)
                    self._store(account, grant)
                    await session.flush()
                    fresh = _current(account, self.cipher)
            except DBAPIError as exc:
                error = exc
                continue
            self._count(account_provider, "ok")
            bound.warning(
                "access token refreshed; storing it took another transaction",
                attempts=attempt + 2,
                first_error=type(error.orig).__name__,
            )
            return fresh
        self._count(account_provider, "failed")
        bound.error(
            "the provider issued new tokens but the database would not store them",
            error=type(error.orig).__name__,
        )
        raise RetryableError(
            f"the {account_provider} token refresh for user {user_id!r} succeeded but the "
            f"database would not store the new tokens ({type(error.orig).__name__}); if the "
            "provider rotates refresh tokens the account may need `ingestion connect` again"
        )

    def _count(self, account_provider: str, outcome: str) -> None:
        metrics.TOKEN_REFRESHES.labels(provider=account_provider, outcome=outcome).inc()

    async def _after_dead_grant(
        self, user_id: str, account_provider: str, spent_print: str, failure: _Refused
    ) -> _Current:
        """Re-read the row: if its tokens changed meanwhile (a reconnect, the product's server
        refreshing), use them; otherwise the grant is dead."""
        async with self.db.session() as session:
            account = self._require(
                await find_account(session, user_id, account_provider), user_id, account_provider
            )
            if fingerprint(account) != spent_print:
                self._count(account_provider, "reused")
                return _current(account, self.cipher)
        self._count(account_provider, "reauth")
        raise self._reauth(
            account_provider,
            user_id,
            f"the token endpoint refused the refresh token ({failure.grant}){failure.note}",
        )

    def _reauth(self, account_provider: str, user_id: str, reason: str) -> ReauthRequired:
        return ReauthRequired(
            f"{account_provider} account of user {user_id!r} needs to be reconnected: {reason}; "
            f"run `ingestion connect PROVIDER --user {user_id}` (or store new tokens with "
            f"`ingestion accounts add`)"
        )

    async def _request(
        self, endpoints: OAuthEndpoints, refresh_token: str, bound: structlog.stdlib.BoundLogger
    ) -> TokenGrant:
        """Call the token endpoint, retrying transient failures within `refresh_budget`.

        Raises `_Refused` for a dead grant, `RetryableError` when the retries are exhausted.
        """
        lost: TransientTokenError | None = None

        def backoff(exc: Exception) -> bool | float:
            if not isinstance(exc, TransientTokenError):
                return False
            if exc.retry_after is not None:
                return exc.retry_after if exc.retry_after <= REFRESH_WAIT_MAX else False
            return True

        try:
            async with asyncio.timeout(self.refresh_budget + self.settings.token_request_timeout):
                async for attempt in stamina.retry_context(
                    on=backoff,
                    attempts=REFRESH_ATTEMPTS,
                    timeout=self.refresh_budget,
                    wait_initial=0.2,
                    wait_max=REFRESH_WAIT_MAX,
                    wait_jitter=0.2,
                ):
                    with attempt:
                        try:
                            return await request_refresh(
                                self.http, self.settings, endpoints, refresh_token, self.clock.now()
                            )
                        except TransientTokenError as exc:
                            lost = exc if exc.lost_answer and lost is None else lost
                            bound.warning("token endpoint failed", error=str(exc))
                            raise
        except TransientTokenError as exc:
            self._count(endpoints.account_provider, "failed")
            raise RetryableError(
                f"{endpoints.account_provider} token endpoint: {exc}; retries exhausted",
                retry_after=exc.retry_after,
            ) from None
        except TimeoutError:
            self._count(endpoints.account_provider, "failed")
            raise RetryableError(
                f"{endpoints.account_provider} token endpoint: no refresh within "
                f"{self.refresh_budget:g}s"
            ) from None
        except DeadGrant as dead:
            note = ""
            if lost is not None and endpoints.rotates_refresh_token:
                note = (
                    f". An earlier refresh got no answer ({lost}): the provider most likely "
                    f"rotated the refresh token then, and the new one never arrived"
                )
            raise _Refused(dead, note) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _store(self, account: Account, grant: TokenGrant) -> None:
        """Write an issued grant into the locked row (committed by the caller's transaction).

        Without a new refresh token in the answer the old one is kept (Google does not rotate).
        Tokens are written encrypted when a Better Auth secret is set (the kept one too).
        """
        seal_tokens(
            account,
            self.cipher,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token or None,
        )
        account.access_token_expires_at = grant.expires_at
        if grant.refresh_token and grant.refresh_token_expires_at is not None:
            account.refresh_token_expires_at = grant.refresh_token_expires_at
        if grant.scope:
            account.scope = grant.scope
        account.updated_at = self.clock.now()

    # --- locking -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _locked(
        self, user_id: str, account_provider: str
    ) -> AsyncIterator[tuple[AsyncSession, Account | None]]:
        """A transaction holding the write lock on the account row, with the row re-read.

        PostgreSQL: `SELECT … FOR UPDATE` (waits at most `lock_wait`). SQLite: `BEGIN
        IMMEDIATE` takes the database's single writer lock (waits up to its busy timeout).
        """
        async with self.db.session() as session:
            if self.db.kind == "sqlite":
                await session.execute(text("BEGIN IMMEDIATE"))
            else:
                wait_ms = int(self.lock_wait * 1000)
                await session.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
            result = await session.execute(
                select(Account)
                .where(Account.user_id == user_id, Account.provider_id == account_provider)
                .order_by(Account.updated_at.desc())
                .limit(1)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            yield session, result.scalar_one_or_none()


#: Transactions tried to store tokens a provider issued when the first one failed to.
_KEEP_ATTEMPTS = 3
_KEEP_BACKOFF_SECONDS = 0.2


def _lock_failure(account_provider: str, user_id: str, exc: DBAPIError) -> str:
    """Why the account row could not be locked for a refresh (no provider call was made)."""
    kind = type(exc.orig).__name__
    busy = getattr(exc.orig, "sqlstate", None) == "55P03" or "locked" in str(exc.orig).lower()
    if busy:
        return (
            f"could not lock the {account_provider} account of user {user_id!r} for a token "
            f"refresh ({kind}): another worker held it too long"
        )
    return (
        f"could not read the {account_provider} account of user {user_id!r} for a token "
        f"refresh: the database failed ({kind})"
    )
