"""The Gmail API v1 as the provider uses it: profile, message pages, messages, history.

Every call goes through `ApiClient` (Bearer token, one refresh on 401, backoff honouring
`Retry-After`) with two Gmail specifics:

- `classify`: 429, 403 with reason `rateLimitExceeded` / `userRateLimitExceeded`, and every 5xx
  are throttles and retried. Any other 403 (a missing scope: `insufficientPermissions`) is a
  real refusal and raises a `PermanentError` with Google's message: never an empty success;
- a `Pacer` spends Gmail quota units (messages.get 5, messages.attachments.get 5,
  messages.list 5, history.list 2, getProfile 1) at `GMAIL_QUOTA_UNITS_PER_MINUTE`, in bursts of
  at most half a second of it, so a backfill runs at the per-user quota instead of into it.

Messages are fetched through the batch endpoint (`POST /batch/gmail/v1`, `gmail_batch_size`
calls per batch, `gmail_fetch_concurrency` batches in flight): measured faster than one request
per message (bench/results/gmail.md), for the same quota (n calls cost n units). A call inside a
batch that is throttled, refused with 401 or failed with 5xx is fetched again on its own through
the ordinary retry path; a 404 inside a batch means the message is gone.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ingestion.errors import IngestionError
from ingestion.providers.base import TokenSource
from ingestion.providers.gmail.transform import decode_base64url
from ingestion.providers.http import ApiClient, Pacer, Throttle, api_error, parse_retry_after
from ingestion.transport import ResponseRejected, loads_json

__all__ = [
    "QUOTA_UNITS",
    "GmailApi",
    "HistoryExpired",
    "PageTokenRejected",
    "Unreadable",
    "classify",
    "error_reasons",
]

PROVIDER = "gmail"
#: Gmail quota units per method (Google's published costs).
QUOTA_UNITS: Mapping[str, int] = {
    "messages.get": 5,
    "messages.attachments.get": 5,
    "messages.list": 5,
    "history.list": 2,
    "getProfile": 1,
}
_THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_BASE = "/gmail/v1/users/me"


class HistoryExpired(IngestionError):
    """history.list answered 404: the stored `historyId` is too old; a full sync is needed."""


@dataclass(frozen=True)
class Unreadable:
    """A message whose answer could not be read (over `HTTP_MAX_RESPONSE_BYTES`, JSON nested
    too deep): the sync skips and counts it instead of failing the page on every run."""

    reason: str


class PageTokenRejected(IngestionError):
    """messages.list refused a stored page token (400): the backfill restarts its listing."""


def error_reasons(response: httpx.Response) -> set[str]:
    """The `reason`s of a Google error body (`errors[].reason` and `details[].reason`).

    Gmail and Calendar share it: both speak Google's JSON error format.
    """
    try:
        body: Any = response.json()
    except ValueError:
        return set()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return set()
    reasons = {str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)}
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason"):
            reasons.add(str(detail["reason"]))
    return reasons


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
        remaining = units
        while remaining > 0:  # a batch may cost more than the bucket holds: wait for all of it
            chunk = min(remaining, self.capacity)
            await super().acquire(chunk)
            remaining -= chunk
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
        batch_size: int = 0,
    ) -> None:
        # Paced at the budget with a bucket of half a second of quota (at least one
        # messages.get): even where Gmail enforces its per-minute quota as a one-second bucket,
        # a request may reach it up to half a second closer to the one before than it was
        # paced (a busy host, the network, several batches in flight) without a 429.
        rate_per_second = quota_units_per_minute / 60.0
        self.pacer = _CountingPacer(
            quota_units_per_minute, 60.0, burst=max(5.0, rate_per_second / 2)
        )
        self.api = ApiClient(
            provider=PROVIDER,
            http=http,
            tokens=tokens,
            base_url=base_url,
            classify=classify,
            pacer=self.pacer,
        )
        self.concurrency = concurrency
        # A batch never spends more than the pacer's bucket (half a second of quota) at once.
        per_second = int(self.pacer.capacity // QUOTA_UNITS["messages.get"])
        self.batch_size = min(batch_size, max(1, per_second))

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

    async def get_message(self, message_id: str) -> dict[str, Any] | Unreadable | None:
        """The message in `format=full`, `Unreadable` when its answer is refused by the
        transport's bounds, or None when it no longer exists (404)."""
        try:
            response = await self._get(
                f"{_BASE}/messages/{message_id}", "messages.get", {"format": "full"}
            )
        except ResponseRejected as exc:
            return Unreadable(str(exc))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise api_error(PROVIDER, "messages.get", response)
        result: dict[str, Any] = response.json()
        return result

    async def attachment(self, message_id: str, attachment_id: str) -> bytes | None:
        """The bytes of a part stored apart (`messages.attachments.get`), None when gone."""
        response = await self._get(
            f"{_BASE}/messages/{message_id}/attachments/{attachment_id}",
            "messages.attachments.get",
            {},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise api_error(PROVIDER, "messages.attachments.get", response)
        body: Any = loads_json(response.content, what="gmail messages.attachments.get")
        data = body.get("data") if isinstance(body, dict) else None
        return decode_base64url(data) if isinstance(data, str) else b""

    async def get_messages(
        self, message_ids: Sequence[str]
    ) -> list[dict[str, Any] | Unreadable | None]:
        """Messages in the order asked (None for one that is gone, `Unreadable` for one whose
        answer is over the transport's bounds), in batches when enabled. A batch answer over
        the bounds is fetched again message by message."""
        if self.batch_size <= 1 or len(message_ids) <= 1:
            return await self._get_each(message_ids)
        size = self.batch_size
        chunks = [message_ids[i : i + size] for i in range(0, len(message_ids), size)]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def run(chunk: Sequence[str]) -> dict[str, Any]:
            async with semaphore:
                return await self._batch(chunk)

        found: dict[str, Any] = {}
        for answers in await asyncio.gather(*(run(chunk) for chunk in chunks)):
            found.update(answers)
        again = [mid for mid in message_ids if found.get(mid, _AGAIN) is _AGAIN]
        if again:
            found.update(zip(again, await self._get_each(again), strict=True))
        return [found[mid] for mid in message_ids]

    async def _get_each(
        self, message_ids: Sequence[str]
    ) -> list[dict[str, Any] | Unreadable | None]:
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(message_id: str) -> dict[str, Any] | Unreadable | None:
            async with semaphore:
                return await self.get_message(message_id)

        return list(await asyncio.gather(*(one(message_id) for message_id in message_ids)))

    async def _batch(self, message_ids: Sequence[str]) -> dict[str, Any]:
        """One batch of `messages.get`: id -> message, None (404) or `_AGAIN` (retry alone)."""
        boundary = f"batch_{secrets.token_hex(12)}"
        body = (
            "".join(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <item-{index}>\r\n\r\n"
                f"GET {_BASE}/messages/{message_id}?format=full HTTP/1.1\r\n\r\n"
                for index, message_id in enumerate(message_ids)
            )
            + f"--{boundary}--\r\n"
        )
        try:
            response = await self.api.request(
                "POST",
                "/batch/gmail/v1",
                endpoint="batch",
                content=body.encode("ascii"),
                headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
                cost=QUOTA_UNITS["messages.get"] * len(message_ids),
            )
        except ResponseRejected:
            return {}  # too large as a whole: each message is fetched on its own

        if response.status_code != 200:
            raise api_error(PROVIDER, "batch", response)
        # Splitting the answer and parsing up to `batch_size` messages of JSON (each as large
        # as the transport admits) is CPU work: done on a thread, so the event loop keeps
        # serving the worker's other jobs, lock renewals and keep-alives meanwhile.
        return await asyncio.to_thread(_batch_results, response, message_ids)


def _batch_results(response: httpx.Response, message_ids: Sequence[str]) -> dict[str, Any]:
    """id -> message, None (404) or `_AGAIN` (retry alone) for every call of a batch answer."""
    results: dict[str, Any] = {}
    for index, status, payload in _batch_answers(response):
        if not 0 <= index < len(message_ids):
            continue
        message_id = message_ids[index]
        if status == 200:
            # Each part is JSON of its own, bounded like a whole answer (`transport`).
            try:
                results[message_id] = loads_json(payload, what=f"gmail message {message_id}")
            except ResponseRejected as exc:
                results[message_id] = Unreadable(str(exc))
        elif status == 404:
            results[message_id] = None
        else:
            answer = httpx.Response(status, content=payload)
            if status == 401 or classify(answer) is not None:
                results[message_id] = _AGAIN
            else:
                raise api_error(PROVIDER, "messages.get (in a batch)", answer)
    return results


#: A call inside a batch to make again on its own.
_AGAIN = object()
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)
_CONTENT_ID = re.compile(rb"content-id:\s*<(?:response-)?item-(\d+)>", re.I)
_BLANK = re.compile(rb"\r?\n\r?\n")


def _batch_answers(response: httpx.Response) -> list[tuple[int, int, bytes]]:
    """(call index, HTTP status, body) of every part of a multipart/mixed batch answer."""
    match = _BOUNDARY.search(response.headers.get("content-type", ""))
    if not match:
        raise api_error(PROVIDER, "batch", response)
    delimiter = b"--" + match.group(1).encode()
    answers: list[tuple[int, int, bytes]] = []
    for chunk in response.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        pieces = _BLANK.split(chunk.lstrip(b"\r\n"), maxsplit=2)
        if len(pieces) < 2:
            continue
        content_id = _CONTENT_ID.search(pieces[0])
        status_line = pieces[1].split(b"\n", 1)[0].split()
        if content_id is None or len(status_line) < 2 or not status_line[1].isdigit():
            continue
        payload = pieces[2].strip() if len(pieces) > 2 else b""
        answers.append((int(content_id.group(1)), int(status_line[1]), payload))
    return answers
