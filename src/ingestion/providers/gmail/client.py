"""The Gmail API v1 as the provider uses it: profile, message pages, messages, history.

Every call goes through `ApiClient` (Bearer token, one refresh on 401, backoff honouring
`Retry-After`) with two Gmail specifics:

- `classify`: 429, 403 with reason `rateLimitExceeded` / `userRateLimitExceeded`, and every 5xx
  are throttles and retried. Any other 403 (a missing scope: `insufficientPermissions`) is a
  real refusal and raises a `PermanentError` with Google's message: never an empty success;
- a `Pacer` spends Gmail quota units (messages.get 5, messages.list 5, history.list 2,
  getProfile 1) below `GMAIL_QUOTA_UNITS_PER_MINUTE`, so a backfill runs near the per-user
  quota instead of into it.

Messages are fetched one request each, `gmail_fetch_concurrency` at a time over the pooled
connection (measured against the batch endpoint in bench/results/gmail.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ingestion.errors import IngestionError
from ingestion.providers.base import TokenSource
from ingestion.providers.http import ApiClient, Pacer, Throttle, api_error, parse_retry_after

__all__ = [
    "QUOTA_UNITS",
    "GmailApi",
    "HistoryExpired",
    "PageTokenRejected",
    "classify",
    "error_reasons",
]

PROVIDER = "gmail"
#: Gmail quota units per method (Google's published costs).
QUOTA_UNITS: Mapping[str, int] = {
    "messages.get": 5,
    "messages.list": 5,
    "history.list": 2,
    "getProfile": 1,
}
_THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_BASE = "/gmail/v1/users/me"


class HistoryExpired(IngestionError):
    """history.list answered 404: the stored `historyId` is too old; a full sync is needed."""


class PageTokenRejected(IngestionError):
    """messages.list refused a stored page token (400): the backfill restarts its listing."""


def error_reasons(response: httpx.Response) -> set[str]:
    """The `reason`s of a Google error body (`{"error": {"errors": [{"reason"}]}}`)."""
    try:
        body: Any = response.json()
    except ValueError:
        return set()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return set()
    return {str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)}


def classify(response: httpx.Response) -> Throttle | None:
    """Gmail throttles: 429, 403 rate-limit reasons, 5xx. Other 403s are real refusals."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 429:
        reasons = error_reasons(response) & _THROTTLE_REASONS
        return Throttle(retry_after, True, sorted(reasons)[0] if reasons else "HTTP 429")
    if status == 403:
        reasons = error_reasons(response) & _THROTTLE_REASONS
        return Throttle(retry_after, True, sorted(reasons)[0]) if reasons else None
    if status >= 500:
        return Throttle(retry_after, False, f"HTTP {status}")
    return None


class _CountingPacer(Pacer):
    """A `Pacer` that also adds up the units it let through (retries included)."""

    spent = 0.0

    async def acquire(self, units: float = 1.0) -> None:
        await super().acquire(units)
        self.spent += units


class GmailApi:
    """One user's mailbox, for one sync."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        base_url: str,
        quota_units_per_minute: int,
        concurrency: int,
    ) -> None:
        # Burst of one second of quota (at least one messages.get): near the limit, never over.
        rate_per_second = quota_units_per_minute / 60.0
        self.pacer = _CountingPacer(quota_units_per_minute, 60.0, burst=max(5.0, rate_per_second))
        self.api = ApiClient(
            provider=PROVIDER,
            http=http,
            tokens=tokens,
            base_url=base_url,
            classify=classify,
            pacer=self.pacer,
        )
        self.concurrency = concurrency

    @property
    def requests(self) -> int:
        return self.api.requests

    @property
    def units(self) -> int:
        """Quota units spent by this sync (every request sent, retries included)."""
        return int(self.pacer.spent)

    async def _get(
        self, path: str, method: str, params: Mapping[str, Any] | list[tuple[str, Any]]
    ) -> httpx.Response:
        return await self.api.request(
            "GET", path, endpoint=method, params=params, cost=QUOTA_UNITS[method]
        )

    async def profile(self) -> dict[str, Any]:
        """`{emailAddress, messagesTotal, threadsTotal, historyId}`."""
        response = await self._get(f"{_BASE}/profile", "getProfile", {})
        if response.status_code != 200:
            raise api_error(PROVIDER, "getProfile", response)
        result: dict[str, Any] = response.json()
        return result

    async def list_messages(
        self, *, query: str, page_size: int, page_token: str | None
    ) -> dict[str, Any]:
        """One page of `{messages: [{id, threadId}], nextPageToken?, resultSizeEstimate}`."""
        params: dict[str, Any] = {"q": query, "maxResults": page_size}
        if page_token:
            params["pageToken"] = page_token
        response = await self._get(f"{_BASE}/messages", "messages.list", params)
        if response.status_code == 400 and page_token:
            raise PageTokenRejected(
                f"gmail messages.list refused the page token: {response.text[:200]}"
            )
        if response.status_code != 200:
            raise api_error(PROVIDER, "messages.list", response)
        result: dict[str, Any] = response.json()
        return result

    async def history(self, *, start_history_id: str, page_token: str | None) -> dict[str, Any]:
        """One page of `{history?: [...], nextPageToken?, historyId}`.

        Raises `HistoryExpired` on 404 (the id is older than Google keeps history).
        """
        params: dict[str, Any] = {"startHistoryId": start_history_id, "maxResults": 500}
        if page_token:
            params["pageToken"] = page_token
        response = await self._get(f"{_BASE}/history", "history.list", params)
        if response.status_code == 404:
            raise HistoryExpired(f"gmail history.list: historyId {start_history_id} expired")
        if response.status_code != 200:
            raise api_error(PROVIDER, "history.list", response)
        result: dict[str, Any] = response.json()
        return result

    async def get_message(self, message_id: str) -> dict[str, Any] | None:
        """The message in `format=full`, or None when it no longer exists (404)."""
        response = await self._get(
            f"{_BASE}/messages/{message_id}", "messages.get", {"format": "full"}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise api_error(PROVIDER, "messages.get", response)
        result: dict[str, Any] = response.json()
        return result

    async def get_messages(self, message_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Messages in the order asked, `concurrency` requests in flight; None for a 404."""
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(message_id: str) -> dict[str, Any] | None:
            async with semaphore:
                return await self.get_message(message_id)

        return list(await asyncio.gather(*(one(message_id) for message_id in message_ids)))
