"""The Google Calendar API v3 as the provider uses it: calendar list and event pages.

Every call goes through `ApiClient` (Bearer token, one refresh on 401, pacing below
`CALENDAR_QUOTA_REQUESTS_PER_MINUTE`, backoff honouring `Retry-After`). On top of that:

- `classify` turns Calendar's throttles into retries: 429 and 403 with reason
  `rateLimitExceeded`, `userRateLimitExceeded` or `quotaExceeded`, and every 5xx. Any other 403
  (a missing scope, a forbidden calendar) is *not* a throttle and reaches the caller;
- a 410 `fullSyncRequired` raises `SyncTokenExpired` (retryable if it ever escapes), a 404
  `CalendarGone` (permanent); the sync decides what they mean. Every other unexpected
  answer raises through `api_error` (a 403 for a missing scope is a `PermanentError` with
  Google's own message, so `status` shows it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ingestion.errors import PermanentError, RetryableError
from ingestion.providers.base import TokenSource
from ingestion.providers.gmail.client import error_reasons  # Google's shared error shape
from ingestion.providers.http import ApiClient, Pacer, Throttle, api_error, parse_retry_after

__all__ = [
    "MAX_EVENTS_PAGE",
    "MAX_LIST_PAGE",
    "CalendarApi",
    "CalendarGone",
    "ListPage",
    "SyncTokenExpired",
    "classify",
    "error_reasons",
]

PROVIDER = "calendar"
#: The API's page size limits.
MAX_EVENTS_PAGE = 2500
MAX_LIST_PAGE = 250

_THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})


class SyncTokenExpired(RetryableError):
    """HTTP 410 `fullSyncRequired`: the sync token (or page token) is no longer valid.

    `page_token_refused` is set when the refused request carried a page token (410, or a 400
    "Invalid Value" for a page token kept too long): restarting the listing without it helps.
    """

    def __init__(self, message: str, *, page_token_refused: bool = False) -> None:
        super().__init__(message)
        self.page_token_refused = page_token_refused


class CalendarGone(PermanentError):
    """HTTP 404: the calendar (or event) does not exist or is no longer visible to the user."""


def classify(response: httpx.Response) -> Throttle | None:
    """Calendar throttles: 429, 403 rate/quota reasons, 5xx. Other 403s are real refusals."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (403, 429):
        reasons = error_reasons(response)
        throttle_reasons = reasons & _THROTTLE_REASONS
        if status == 429 or throttle_reasons:
            reason = sorted(throttle_reasons)[0] if throttle_reasons else "HTTP 429"
            return Throttle(retry_after, True, reason)
        return None
    if status >= 500:
        return Throttle(retry_after, False, f"HTTP {status}")
    return None


@dataclass
class ListPage:
    """One page of `calendarList.list` or `events.list`."""

    items: list[dict[str, Any]]
    next_page_token: str | None
    next_sync_token: str | None
    time_zone: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _page(body: Mapping[str, Any]) -> ListPage:
    items = body.get("items") or []
    return ListPage(
        items=[item for item in items if isinstance(item, dict)],
        next_page_token=body.get("nextPageToken") or None,
        next_sync_token=body.get("nextSyncToken") or None,
        time_zone=body.get("timeZone") or None,
    )


class CalendarApi:
    """Calendar API calls for one user's sync."""

    def __init__(
        self,
        *,
        base_url: str,
        http: httpx.AsyncClient,
        tokens: TokenSource | None,
        requests_per_minute: int,
        max_inline_wait: float = 60.0,
    ) -> None:
        burst = max(1.0, min(10.0, requests_per_minute / 60.0))
        self.api = ApiClient(
            provider=PROVIDER,
            http=http,
            tokens=tokens,
            base_url=base_url,
            headers={"Accept": "application/json"},
            classify=classify,
            pacer=Pacer(requests_per_minute, 60.0, burst=burst),
            max_inline_wait=max_inline_wait,
        )

    @property
    def requests(self) -> int:
        """Requests sent so far, retries included."""
        return self.api.requests

    async def calendar_list(self, *, sync_token: str | None, page_token: str | None) -> ListPage:
        """One page of the user's calendar list.

        With `sync_token` only changed entries come back, deleted and hidden ones included;
        without it every entry, hidden ones included (the caller filters).
        """
        params: dict[str, Any] = {"maxResults": MAX_LIST_PAGE}
        if sync_token:
            params["syncToken"] = sync_token
        else:
            params["showHidden"] = "true"
        if page_token:
            params["pageToken"] = page_token
        return await self._get("/users/me/calendarList", "calendarList.list", params)

    async def events(
        self,
        calendar_id: str,
        *,
        sync_token: str | None = None,
        page_token: str | None = None,
        time_min: str | None = None,
        time_max: str | None = None,
        show_deleted: bool = False,
        page_size: int = MAX_EVENTS_PAGE,
    ) -> ListPage:
        """One page of a calendar's events, recurring series as series (`singleEvents=false`).

        With `sync_token` the page holds what changed since (cancelled events included) and the
        window parameters are not sent: the API refuses them together.
        """
        params: dict[str, Any] = {
            "maxResults": min(page_size, MAX_EVENTS_PAGE),
            "singleEvents": "false",
        }
        if sync_token:
            params["syncToken"] = sync_token
        else:
            if time_min:
                params["timeMin"] = time_min
            if time_max:
                params["timeMax"] = time_max
            if show_deleted:
                params["showDeleted"] = "true"
        if page_token:
            params["pageToken"] = page_token
        return await self._get(f"/calendars/{_segment(calendar_id)}/events", "events.list", params)

    async def event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        """One event (`events.get`); raises `CalendarGone` on 404 or 410 (deleted)."""
        path = f"/calendars/{_segment(calendar_id)}/events/{_segment(event_id)}"
        response = await self.api.request("GET", path, endpoint="events.get")
        if response.status_code in (404, 410):
            raise CalendarGone(f"calendar events.get: HTTP {response.status_code}")
        if response.status_code != 200:
            raise api_error(PROVIDER, "events.get", response)
        body: dict[str, Any] = response.json()
        return body

    async def _get(self, path: str, endpoint: str, params: Mapping[str, Any]) -> ListPage:
        response = await self.api.request("GET", path, endpoint=endpoint, params=params)
        status = response.status_code
        if status == 200:
            return _page(response.json())
        paged = "pageToken" in params
        if status == 410 or (status == 400 and paged):
            raise SyncTokenExpired(
                f"calendar {endpoint}: token refused (HTTP {status})", page_token_refused=paged
            )
        if status == 404:
            raise CalendarGone(f"calendar {endpoint}: HTTP 404 (calendar not found)")
        raise api_error(PROVIDER, endpoint, response)


def _segment(value: str) -> str:
    """A path segment: calendar ids contain `@` and `#` (`en.usa#holiday@group.v...`)."""
    return quote(value, safe="")
