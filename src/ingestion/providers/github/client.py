"""The GitHub REST client of one sync: conditional requests, Link paging and rate limits.

Promises, on top of `ApiClient` (token, 401 refresh, retries):

- every call sends `Accept: application/vnd.github+json` and `X-GitHub-Api-Version: 2022-11-28`
  to `GITHUB_API_URL` (github.com or a GitHub Enterprise Server `https://HOST/api/v3`);
- a listing follows every `Link: rel="next"` URL exactly as given;
- with a stored ETag, a page is asked with `If-None-Match`; a 304 (which GitHub does not count
  against the rate limit) is reported as unchanged, without a body;
- the primary limit (403/429 with `x-ratelimit-remaining: 0`) waits until `x-ratelimit-reset`;
  any other 403/429 carrying `retry-after` waits that long whatever its message says, and a
  403/429 whose message says "secondary rate limit" or "abuse detection" without it waits at
  least a minute; a wait longer than `MAX_INLINE_WAIT` is not slept in the
  worker: `RateLimited(retry_after=…)` defers the job to that moment;
- `x-ratelimit-remaining`/`reset` are tracked per account, and once no more than
  `GITHUB_RATE_LIMIT_RESERVE` requests remain the client stops *before* the next request with
  `RateLimited`, leaving the reserve to the person's other tools;
- at most `GITHUB_CONCURRENCY` requests of one account are in flight at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from ingestion.errors import RateLimited
from ingestion.providers.base import TokenSource
from ingestion.providers.http import (
    ApiClient,
    Throttle,
    default_classify,
    parse_reset_epoch,
    parse_retry_after,
)
from ingestion.retry_after import MAX_WAIT_SECONDS

__all__ = [
    "GITHUB_HEADERS",
    "MAX_INLINE_WAIT",
    "SECONDARY_LIMIT_MIN_WAIT",
    "SECONDARY_LIMIT_WORDS",
    "GitHubClient",
    "ListingPage",
    "RateBudget",
    "Reply",
    "classify",
    "next_link",
]

GITHUB_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}
#: GitHub: without `retry-after` or a reset header, wait at least one minute.
SECONDARY_LIMIT_MIN_WAIT = 60.0
#: Messages of a secondary limit without `retry-after` (today's wording, and the "abuse
#: detection mechanism" of older GitHub Enterprise Server releases).
SECONDARY_LIMIT_WORDS = ("secondary rate limit", "abuse detection")
#: Longer waits (a secondary limit's minute, a primary limit's reset) defer the job instead of
#: holding a worker slot.
MAX_INLINE_WAIT = 30.0


def next_link(header: str | None) -> str | None:
    """The `rel="next"` URL of a `Link` header, verbatim."""
    if not header:
        return None
    for part in header.split(","):
        url, _, params = part.partition(";")
        if any(p.strip().replace(" ", "") in ('rel="next"', "rel=next") for p in params.split(";")):
            return url.strip().strip("<>")
    return None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def _reset_wait(response: httpx.Response, now: float) -> float | None:
    return parse_reset_epoch(response.headers.get("x-ratelimit-reset"), now=now)


def classify(response: httpx.Response, *, now: float | None = None) -> Throttle | None:
    """GitHub's throttles: primary limit, secondary limit, then the generic 429/5xx rules."""
    status = response.status_code
    if status in (403, 429):
        current = time.time() if now is None else now
        if response.headers.get("x-ratelimit-remaining") == "0":
            return Throttle(_reset_wait(response, current), True, "primary rate limit")
        after = parse_retry_after(response.headers.get("retry-after"))
        if after is not None:
            # GitHub: "If the retry-after response header is present, you should not retry
            # your request until after that many seconds has elapsed", whatever the message
            # (older Enterprise servers word it "abuse detection mechanism").
            return Throttle(after, True, "secondary rate limit")
        message = _message(response).lower()
        if any(words in message for words in SECONDARY_LIMIT_WORDS):
            reset = _reset_wait(response, current)
            return Throttle(
                max(SECONDARY_LIMIT_MIN_WAIT, reset or 0.0), True, "secondary rate limit"
            )
    return default_classify(response)


class RateBudget:
    """The last seen `x-ratelimit-*` figures of one account (GitHub counts per user)."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset: float | None = None
        #: Requests that GitHub counted (every answer but a 304), seen by this process.
        self.used = 0

    def observe(self, response: httpx.Response) -> None:
        headers = response.headers
        if response.status_code != 304 and "x-ratelimit-remaining" in headers:
            self.used += 1
        try:
            if "x-ratelimit-remaining" in headers:
                self.remaining = int(headers["x-ratelimit-remaining"])
            if "x-ratelimit-limit" in headers:
                self.limit = int(headers["x-ratelimit-limit"])
            if "x-ratelimit-reset" in headers:
                reset = float(headers["x-ratelimit-reset"])
                # `inf`, `nan` or an epoch beyond the longest wait would park the account.
                self.reset = reset if 0 <= reset < time.time() + MAX_WAIT_SECONDS else None
        except ValueError:
            return

    def check(self, reserve: int, now: float) -> None:
        """Raise `RateLimited` (until the reset) when no more than `reserve` requests remain."""
        if self.remaining is None or self.reset is None:
            return
        if now >= self.reset:
            self.remaining = None
            return
        if self.remaining <= reserve:
            raise RateLimited(
                f"github: {self.remaining} requests left in the rate-limit window "
                f"(reserve {reserve}); deferring until it resets",
                retry_after=self.reset - now + 1.0,
            )


#: Budgets by account (API base URL, user id); kept for the life of the process so a deferred
#: job's next attempt still knows the window it stopped in.
_BUDGETS: dict[tuple[str, str], RateBudget] = {}


def budget_for(base_url: str, user_id: str) -> RateBudget:
    key = (base_url, user_id)
    if key not in _BUDGETS:
        if len(_BUDGETS) > 10_000:
            _BUDGETS.clear()
        _BUDGETS[key] = RateBudget()
    return _BUDGETS[key]


@dataclass(frozen=True)
class Reply:
    """One answer: `data` is None for a 304 (unchanged) and for errors without a body."""

    status: int
    data: Any
    etag: str | None
    next_url: str | None
    response: httpx.Response

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class ListingPage:
    """One page of a listing: `items` is None when the page answered 304 (unchanged)."""

    url: str
    items: list[Any] | None
    etag: str | None
    #: False when the listing stopped at an error answer (`reply` holds it).
    ok: bool
    reply: Reply


class GitHubClient:
    """GitHub calls of one sync; `requests`, `not_modified` and `budget` feed the run stats."""

    def __init__(
        self,
        *,
        base_url: str,
        http: httpx.AsyncClient,
        tokens: TokenSource | None,
        user_id: str,
        concurrency: int,
        reserve: int,
        max_inline_wait: float = MAX_INLINE_WAIT,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.now = now
        self.budget = budget_for(self.base_url, user_id)
        self.reserve = reserve
        self.api = ApiClient(
            provider="github",
            http=http,
            tokens=tokens,
            base_url=self.base_url,
            headers=GITHUB_HEADERS,
            classify=self._classify,
            max_inline_wait=max_inline_wait,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self.not_modified = 0
        self.units_used = 0

    @property
    def requests(self) -> int:
        return self.api.requests

    def _classify(self, response: httpx.Response) -> Throttle | None:
        self._observe(response)
        return classify(response, now=self.now())

    def _observe(self, response: httpx.Response) -> None:
        if response.status_code == 304:
            self.not_modified += 1
        elif "x-ratelimit-remaining" in response.headers:
            self.units_used += 1
        self.budget.observe(response)

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """The absolute URL of `path` with `params` (the key under which ETags are kept)."""
        url = self.api.url(path)
        return f"{url}?{urlencode(dict(params))}" if params else url

    async def get(self, url: str, *, endpoint: str, etag: str | None = None) -> Reply:
        """One GET of an absolute URL (conditional when `etag` is given)."""
        async with self._slots:
            self.budget.check(self.reserve, self.now())
            headers = {"If-None-Match": etag} if etag else None
            response = await self.api.request("GET", url, endpoint=endpoint, headers=headers)
        data: Any = None
        if response.status_code != 304 and response.content:
            try:
                data = response.json()
            except ValueError:
                data = None
        return Reply(
            status=response.status_code,
            data=data,
            etag=response.headers.get("etag"),
            next_url=next_link(response.headers.get("link")),
            response=response,
        )

    async def listing(
        self,
        first_url: str,
        *,
        endpoint: str,
        etags: list[tuple[str, str]] | None = None,
        max_pages: int | None = None,
    ) -> AsyncGenerator[ListingPage, None]:
        """Every page of a listing, following `Link: rel="next"`.

        `etags` are the (url, etag) pairs of the previous walk of the same listing: each page
        is asked conditionally, and after a 304 the walk continues with the next URL of that
        previous walk (a 304 carries no trustworthy body to read links from).
        """
        previous = list(etags or [])
        known = dict(previous)
        order = [url for url, _ in previous]
        url: str | None = first_url
        pages = 0
        while url is not None:
            reply = await self.get(url, endpoint=endpoint, etag=known.get(url))
            pages += 1
            if reply.not_modified:
                yield ListingPage(url, None, reply.etag or known.get(url), True, reply)
                position = order.index(url) if url in order else -1
                url = order[position + 1] if 0 <= position < len(order) - 1 else None
            elif reply.status == 200 and isinstance(reply.data, list):
                yield ListingPage(url, reply.data, reply.etag, True, reply)
                url = reply.next_url
            else:
                yield ListingPage(url, None, None, False, reply)
                return
            if max_pages is not None and pages >= max_pages:
                return
