"""How every provider calls its API: the user's token, pacing, retries and error classes.

`ApiClient.request` promises, for each call:

- the Bearer token comes from the `TokenSource`; on a 401 the token is refreshed once (the
  token service makes sure concurrent workers spend a rotating refresh token only once) and
  the request is repeated once;
- a `Pacer`, when given, spaces requests below the provider's published per-user quota, so a
  backfill runs near the quota instead of into it;
- 429, 5xx and network errors (and whatever the provider's `classify` calls a throttle, such as
  Gmail's 403 `userRateLimitExceeded`) are retried with exponential backoff and jitter
  (stamina), waiting `Retry-After` / reset time when the server names one;
- a wait longer than `max_inline_wait` is not slept in the worker: `RateLimited` (or
  `RetryableError`) is raised with `retry_after`, and the worker defers the job in the queue;
- the token only ever goes to the configured API origin: an absolute URL the API handed back
  (a `Link` header, a URL stored in a cursor) on another scheme, host or port is refused
  (`PermanentError`) before anything is sent. Bodies are read bounded (`ingestion.transport`).

Any other answer (2xx, 304, 404, 410...) is returned for the provider to interpret;
`api_error` turns an unexpected one into the right `ingestion.errors` class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import stamina

from ingestion import metrics
from ingestion.errors import (
    IngestionError,
    PermanentError,
    RateLimited,
    ReauthRequired,
    RetryableError,
)
from ingestion.providers.base import TokenSource
from ingestion.retry_after import parse_reset_epoch, parse_retry_after

__all__ = [
    "ApiClient",
    "Pacer",
    "Throttle",
    "api_error",
    "default_classify",
    "epoch_to_wait",
    "parse_reset_epoch",
    "parse_retry_after",
]


@dataclass(frozen=True)
class Throttle:
    """A response that should be retried later.

    `rate_limited` = a quota/rate window (becomes `RateLimited`), else a transient fault.
    """

    retry_after: float | None
    rate_limited: bool
    reason: str


ClassifyFn = Callable[[httpx.Response], Throttle | None]


def default_classify(response: httpx.Response) -> Throttle | None:
    """429 and 5xx are throttles; everything else is the provider's to read."""
    status = response.status_code
    if status == 429:
        return Throttle(parse_retry_after(response.headers.get("retry-after")), True, "HTTP 429")
    if status >= 500:
        return Throttle(
            parse_retry_after(response.headers.get("retry-after")), False, f"HTTP {status}"
        )
    return None


def _error_message(response: httpx.Response) -> str:
    """The API's own message, from the error shapes of Google, GitHub and X."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("detail", "message", "title", "error_description"):
            if body.get(key):
                return str(body[key])
        if isinstance(error, str):
            return error
    return response.reason_phrase


def api_error(provider: str, endpoint: str, response: httpx.Response) -> IngestionError:
    """The error class for an answer the provider did not expect."""
    message = f"{provider} {endpoint}: HTTP {response.status_code}: {_error_message(response)}"
    status = response.status_code
    if status == 401:
        return ReauthRequired(f"{message} (the access token was refused even after a refresh)")
    if status == 403:
        return PermanentError(f"{message} (check the account's granted scopes and access)")
    if status == 429:
        return RateLimited(
            message, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    if status >= 500:
        return RetryableError(message)
    return PermanentError(message)


class Pacer:
    """Token bucket: at most `units` per `per_seconds`, with bursts up to `burst` units.

    One sync of one (user, provider) runs at a time across all workers, so pacing inside the
    sync keeps the user's quota (requests cost their provider's quota units).
    """

    def __init__(self, units: float, per_seconds: float, *, burst: float | None = None) -> None:
        self.rate = units / per_seconds
        self.capacity = burst if burst is not None else max(1.0, units / per_seconds)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited = 0.0

    async def acquire(self, units: float = 1.0) -> None:
        # A call dearer than the bucket waits for a full bucket and leaves it in debt, so the
        # average rate stays at `units / per_seconds` whatever the cost of single calls.
        needed = min(units, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= needed:
                    self._tokens -= units
                    return
                wait = (needed - self._tokens) / self.rate
                self.waited += wait
                metrics.RATE_LIMIT_WAIT_SECONDS.labels(reason="pacing").inc(wait)
                await asyncio.sleep(wait)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an absolute URL, the default port made explicit."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    if not parsed.host:
        return None
    scheme = parsed.scheme.lower()
    return scheme, parsed.host.lower(), parsed.port or _DEFAULT_PORTS.get(scheme)


def _origin_text(url: str) -> str:
    origin = _origin(url)
    if origin is None:
        return "an unparseable URL"
    return f"{origin[0]}://{origin[1][:253]}:{origin[2]}"


class _Throttled(Exception):
    def __init__(self, throttle: Throttle, status: int | None) -> None:
        super().__init__(throttle.reason)
        self.throttle = throttle
        self.status = status


class ApiClient:
    """One provider's API for one user's sync. See the module docstring for the promises."""

    def __init__(
        self,
        *,
        provider: str,
        http: httpx.AsyncClient,
        tokens: TokenSource | None,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        classify: ClassifyFn = default_classify,
        pacer: Pacer | None = None,
        attempts: int = 5,
        max_inline_wait: float = 60.0,
        wait_max: float = 30.0,
    ) -> None:
        self.provider = provider
        self.http = http
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.classify = classify
        self.pacer = pacer
        self.attempts = attempts
        self.max_inline_wait = max_inline_wait
        self.wait_max = wait_max
        #: Requests sent (including retries), for run statistics and benchmarks.
        self.requests = 0

    def url(self, path: str) -> str:
        """`path` under the API's base URL; an absolute URL (a `Link` header, a stored cursor)
        only when it is on the configured API origin, else `PermanentError`: the user's token
        is never sent to another host."""
        if not path.lower().startswith(("http://", "https://")):
            return f"{self.base_url}{path}"
        if _origin(path) != _origin(self.base_url):
            raise PermanentError(
                f"{self.provider}: refusing to follow a URL on {_origin_text(path)} with the "
                f"account's token: the API's configured origin is {_origin_text(self.base_url)}"
            )
        return path

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        cost: float = 1.0,
    ) -> httpx.Response:
        """Send one API call with the retry policy; return any non-throttled answer."""
        token = await self.tokens.access_token() if self.tokens else None
        refreshed = False

        def backoff_hook(exc: Exception) -> bool | float:
            if isinstance(exc, _Throttled):
                after = exc.throttle.retry_after
                if after is not None and after > self.max_inline_wait:
                    return False
                if after is not None:
                    metrics.RATE_LIMIT_WAIT_SECONDS.labels(reason="retry_after").inc(after)
                    return after
                return True
            return isinstance(exc, httpx.TransportError)

        try:
            async for attempt in stamina.retry_context(
                on=backoff_hook,
                attempts=self.attempts,
                timeout=None,
                wait_initial=0.5,
                wait_max=self.wait_max,
                wait_jitter=1.0,
            ):
                with attempt:
                    while True:
                        response = await self._send(
                            method, path, endpoint, token, params, headers, json, content, cost
                        )
                        if response.status_code == 401 and self.tokens and not refreshed:
                            refreshed = True
                            await response.aclose()
                            token = await self.tokens.refresh_after_unauthorized(token or "")
                            continue
                        break
                    throttle = self.classify(response)
                    if throttle is not None:
                        metrics.API_RETRIES.labels(
                            provider=self.provider, reason=throttle.reason
                        ).inc()
                        raise _Throttled(throttle, response.status_code)
                    return response
        except _Throttled as exc:
            error_class = RateLimited if exc.throttle.rate_limited else RetryableError
            raise error_class(
                f"{self.provider} {endpoint}: {exc.throttle.reason}, retries exhausted",
                retry_after=exc.throttle.retry_after,
            ) from None
        except httpx.TransportError as exc:
            raise RetryableError(
                f"{self.provider} {endpoint}: network error: {type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        method: str,
        path: str,
        endpoint: str,
        token: str | None,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None,
        headers: Mapping[str, str] | None,
        json: Any,
        content: bytes | None,
        cost: float,
    ) -> httpx.Response:
        if self.pacer is not None:
            await self.pacer.acquire(cost)
        merged = {**self.headers, **(headers or {})}
        if token:
            merged["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        self.requests += 1
        try:
            response = await self.http.request(
                method, self.url(path), params=params, headers=merged, json=json, content=content
            )
        except httpx.TransportError:
            metrics.API_REQUESTS.labels(
                provider=self.provider, endpoint=endpoint, status="network_error"
            ).inc()
            raise
        metrics.API_REQUESTS.labels(
            provider=self.provider, endpoint=endpoint, status=str(response.status_code)
        ).inc()
        metrics.API_LATENCY.labels(provider=self.provider, endpoint=endpoint).observe(
            time.perf_counter() - started
        )
        return response


def epoch_to_wait(reset_epoch: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds until a `x-ratelimit-reset`-style epoch timestamp (`parse_reset_epoch`)."""
    return parse_reset_epoch(reset_epoch, now=(now or datetime.now(UTC)).timestamp())
