"""X API v2 calls for one user's sync: the fields asked for, rate-limit windows, error classes.

Promises:

- every call goes through `ApiClient` (Bearer token, one refresh on 401, 5xx retried with
  backoff); a 429 is never slept on in the worker: it becomes `RateLimited` with `retry_after`
  taken from `x-rate-limit-reset` (epoch seconds), so the job is deferred to the window's reset;
- `x-rate-limit-remaining` / `-reset` are read from every answer, per endpoint; a call on an
  endpoint whose window has `reserve` or fewer requests left is not sent: `RateLimited` is
  raised before X would answer 429 (the caller's cursor is whatever it last yielded);
- a refused `pagination_token` (400 naming it) raises `PaginationTokenRefused`, so the caller
  can resume from its own checkpoint instead;
- the app's usage cap (a 429, or 403, problem whose `title` is `UsageCapExceeded` or whose
  `type` is `…/problems/usage-capped`, while the window headers still show requests left)
  raises `QuotaExhausted` until the cap resets (`usage_cap_reset`), never a window wait.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ingestion.errors import PermanentError, QuotaExhausted, RateLimited
from ingestion.providers.base import SyncContext
from ingestion.providers.http import (
    ApiClient,
    Throttle,
    api_error,
    default_classify,
    epoch_to_wait,
    parse_retry_after,
)
from ingestion.retry_after import MAX_WAIT_SECONDS

__all__ = [
    "EXPANSIONS",
    "MEDIA_FIELDS",
    "PAGE_SIZE",
    "TIMELINE_PATHS",
    "TWEET_FIELDS",
    "USER_FIELDS",
    "PaginationTokenRefused",
    "TimelinePage",
    "TwitterClient",
    "classify",
    "usage_cap",
    "usage_cap_reset",
]

TWEET_FIELDS = (
    "created_at,author_id,conversation_id,public_metrics,entities,attachments,"
    "referenced_tweets,lang,note_tweet"
)
#: Authors and media of each post, and the posts it retweets, quotes or answers (with their
#: authors), so a retweet's record carries the full original text.
EXPANSIONS = "attachments.media_keys,author_id,referenced_tweets.id,referenced_tweets.id.author_id"
MEDIA_FIELDS = "type,url,preview_image_url"
USER_FIELDS = "username"
#: X's largest page (`max_results` is 5..100): fewest requests per post.
PAGE_SIZE = 100
#: A window's length, used when a 429 names no reset time.
WINDOW_SECONDS = 900.0

TIMELINE_PATHS: dict[str, str] = {
    "tweets": "/users/{id}/tweets",
    "mentions": "/users/{id}/mentions",
    "likes": "/users/{id}/liked_tweets",
}


#: The problem X answers once the app's post-read cap is spent (X API v2 OpenAPI
#: `UsageCapExceededProblem`, as in twitter-api-sdk; recorded bodies carry `period`
#: "Monthly" or "Daily" and `scope` "Product" or "Account").
USAGE_CAP_TITLE = "UsageCapExceeded"
USAGE_CAP_TYPE_SUFFIX = "/problems/usage-capped"


def usage_cap(response: httpx.Response) -> dict[str, Any] | None:
    """The usage-cap problem of an answer (None for anything else, including a window 429)."""
    if response.status_code not in (403, 429) or len(response.content) > 64_000:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    title, kind = body.get("title"), body.get("type")
    if title == USAGE_CAP_TITLE or (isinstance(kind, str) and kind.endswith(USAGE_CAP_TYPE_SUFFIX)):
        return body
    return None


def usage_cap_reset(now: datetime, period: str, day: int | None) -> datetime:
    """When a spent cap resets: the next day for a daily cap; else the next `day` of a month
    (the subscription's billing day, clamped to the month's length; default the 1st), at
    00:00 UTC."""
    now = now.astimezone(UTC)
    if period.lower() == "daily":
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    wanted = day or 1
    year, month = now.year, now.month
    for _ in range(3):
        last = calendar.monthrange(year, month)[1]
        candidate = datetime(year, month, min(wanted, last), tzinfo=UTC)
        if candidate > now:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable")  # pragma: no cover


def classify(response: httpx.Response) -> Throttle | None:
    """429 → a rate window until `x-rate-limit-reset`; 5xx → transient (retried). The usage
    cap is not a throttle: it is answered to the caller (see `TwitterClient._get`)."""
    if usage_cap(response) is not None:
        return None
    if response.status_code == 429:
        wait = epoch_to_wait(response.headers.get("x-rate-limit-reset"))
        if wait is None:
            wait = parse_retry_after(response.headers.get("retry-after")) or WINDOW_SECONDS
        return Throttle(wait, True, "HTTP 429 Too Many Requests")
    return default_classify(response)


class PaginationTokenRefused(Exception):
    """X refused a `pagination_token` (expired or foreign): resume from the checkpoint."""


@dataclass(frozen=True)
class TimelinePage:
    """One answer of a timeline endpoint."""

    data: list[dict[str, Any]]
    includes: dict[str, Any]
    meta: dict[str, Any]

    @property
    def next_token(self) -> str | None:
        value = self.meta.get("next_token")
        return str(value) if value else None


@dataclass
class _Window:
    remaining: int
    reset: float


@dataclass
class TwitterClient:
    """The X calls of one sync of one user."""

    ctx: SyncContext
    #: Requests kept unused in every window (another client of the same token may need them).
    reserve: int = 0
    api: ApiClient = field(init=False)
    windows: dict[str, _Window] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.api = ApiClient(
            provider="twitter",
            http=self.ctx.http,
            tokens=self.ctx.tokens,
            base_url=self.ctx.settings.twitter_api_url,
            classify=classify,
            max_inline_wait=0.0,
        )

    @property
    def requests(self) -> int:
        return self.api.requests

    async def me(self) -> dict[str, Any]:
        """`/users/me`: the account's user object (`id`, `username`)."""
        response = await self._get("me", "/users/me", {"user.fields": USER_FIELDS})
        body = _json(response)
        data = body.get("data")
        if response.status_code != 200 or not isinstance(data, dict) or "id" not in data:
            raise api_error("twitter", "users/me", response)
        return data

    async def timeline(self, kind: str, user_id: str, params: dict[str, str]) -> TimelinePage:
        """One page of `kind` (tweets | mentions | likes) with the fields records need."""
        query = {
            "max_results": str(PAGE_SIZE),
            "tweet.fields": TWEET_FIELDS,
            "expansions": EXPANSIONS,
            "media.fields": MEDIA_FIELDS,
            "user.fields": USER_FIELDS,
            **params,
        }
        path = TIMELINE_PATHS[kind].format(id=user_id)
        response = await self._get(kind, path, query)
        refused = response.status_code == 400 and "pagination_token" in response.text
        if refused and "pagination_token" in params:
            raise PaginationTokenRefused(kind)
        if response.status_code != 200:
            raise api_error("twitter", f"users/:id/{kind}", response)
        body = _json(response)
        if "data" not in body and body.get("errors") and "meta" not in body:
            detail = body["errors"][0].get("detail", "unknown error")
            raise PermanentError(f"twitter users/:id/{kind}: {detail}")
        data = body.get("data") or []
        return TimelinePage(
            data=list(data),
            includes=dict(body.get("includes") or {}),
            meta=dict(body.get("meta") or {}),
        )

    async def timeline_ids(self, kind: str, user_id: str, params: dict[str, str]) -> TimelinePage:
        """One page of `kind` with only the default fields (ids): what a reconciliation pass
        needs to know which posts are still listed."""
        path = TIMELINE_PATHS[kind].format(id=user_id)
        response = await self._get(kind, path, {"max_results": str(PAGE_SIZE), **params})
        if response.status_code != 200:
            raise api_error("twitter", f"users/:id/{kind}", response)
        body = _json(response)
        data, meta = body.get("data"), body.get("meta")
        return TimelinePage(
            data=[d for d in data if isinstance(d, dict)] if isinstance(data, list) else [],
            includes={},
            meta=dict(meta) if isinstance(meta, dict) else {},
        )

    async def _get(self, endpoint: str, path: str, params: dict[str, str]) -> httpx.Response:
        self._check_window(endpoint)
        response = await self.api.request("GET", path, endpoint=endpoint, params=params)
        capped = usage_cap(response)
        if capped is not None:
            period = str(capped.get("period") or "Monthly")
            now = self.ctx.clock.now()
            reset = usage_cap_reset(now, period, self.ctx.settings.twitter_usage_cap_reset_day)
            detail = str(capped.get("detail") or USAGE_CAP_TITLE)[:200]
            raise QuotaExhausted(
                f"twitter {endpoint}: {detail} (the app's {period.lower()} usage cap); "
                f"no calls until it resets at {reset.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                retry_after=(reset - now).total_seconds(),
            )
        self._note_window(endpoint, response)
        return response

    def _check_window(self, endpoint: str) -> None:
        window = self.windows.get(endpoint)
        if window is None or window.remaining > self.reserve:
            return
        now = self.ctx.clock.now().timestamp()
        if window.reset <= now:
            del self.windows[endpoint]
            return
        raise RateLimited(
            f"twitter {endpoint}: {window.remaining} request(s) left in the rate window; "
            f"deferred to its reset",
            retry_after=window.reset - now + 1.0,
        )

    def _note_window(self, endpoint: str, response: httpx.Response) -> None:
        remaining = response.headers.get("x-rate-limit-remaining")
        reset = response.headers.get("x-rate-limit-reset")
        if remaining is None or reset is None:
            return
        try:
            window = _Window(int(remaining), float(reset))
        except ValueError:
            return
        # `inf`, `nan` or an epoch beyond the longest wait would park the account.
        if 0 <= window.reset < self.ctx.clock.now().timestamp() + MAX_WAIT_SECONDS:
            self.windows[endpoint] = window


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise api_error("twitter", response.request.url.path, response) from None
    return body if isinstance(body, dict) else {}
