"""Access tokens for connected accounts (design §7, §9).

`TokenService.source(user_id, account_provider)` gives the `TokenSource` a provider calls.
"""

from __future__ import annotations

import httpx

from ingestion.clock import Clock
from ingestion.config import Settings
from ingestion.errors import PermanentError, ReauthRequired
from ingestion.storage.accounts import find_account
from ingestion.storage.db import Database

__all__ = ["AccountTokens", "TokenService"]


class AccountTokens:
    """The token of one (user, account provider)."""

    def __init__(self, service: TokenService, user_id: str, account_provider: str) -> None:
        self.service = service
        self.user_id = user_id
        self.account_provider = account_provider

    async def access_token(self) -> str:
        async with self.service.db.session() as session:
            account = await find_account(session, self.user_id, self.account_provider)
            if account is None or not account.access_token:
                raise PermanentError(
                    f"user {self.user_id!r} has no connected {self.account_provider} account"
                )
            return account.access_token

    async def refresh_after_unauthorized(self, rejected_token: str) -> str:
        raise ReauthRequired(f"{self.account_provider} refused the access token")


class TokenService:
    def __init__(
        self, settings: Settings, db: Database, http: httpx.AsyncClient, clock: Clock
    ) -> None:
        self.settings = settings
        self.db = db
        self.http = http
        self.clock = clock

    def source(self, user_id: str, account_provider: str) -> AccountTokens:
        return AccountTokens(self, user_id, account_provider)
