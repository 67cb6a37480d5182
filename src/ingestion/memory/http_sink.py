"""HTTP sink to the memory engine (design §6): `POST /memories/batch` and `/memories/delete`.

What `HttpMemorySink` promises:

- `upsert` and `delete` return only when the engine answered 2xx to every request they made;
  the sync engine stores the page's cursor only after that.
- Requests stay within the engine's limits: at most `MEMORY_BATCH_SIZE` (≤ 100) records and at
  most `MEMORY_BATCH_MAX_BYTES` of JSON per batch (a single record larger than the byte bound
  travels alone; a 413 splits a batch in halves until it fits or is one record).
- 429, 5xx, timeouts and connection errors are retried on the shared client with exponential
  backoff and jitter (stamina), waiting at least `Retry-After` when the engine sends one; once the
  attempts are spent, or when the engine asks for a wait longer than `max_inline_wait`,
  `RateLimited` (429) or `RetryableError` (5xx, network) is raised with `retry_after`, and the job
  is retried later from the last accepted page. Any other 4xx raises `PermanentError` (401/403:
  `ConfigurationError`) carrying the engine's own message.
- Unchanged records are not sent again: the `contentHash` last accepted per (user, record id)
  is kept in `ingestion_sent_hashes`, written only after the engine accepted the batch; records
  with the same hash are skipped unless `force` (a forced full sync). A delete forgets the
  hashes of the ids it removed, so a record that comes back is sent again.
- Upserts are idempotent by id, so resending after a failure that hid an acceptance is harmless.
- `MEMORY_ENGINE_API_KEY` travels only in the `Authorization` header; it is never logged and
  never part of an error message.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import stamina
import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ingestion import metrics
from ingestion.config import Settings
from ingestion.errors import ConfigurationError, PermanentError, RateLimited, RetryableError
from ingestion.memory.record import MemoryRecord
from ingestion.retry_after import parse_retry_after
from ingestion.storage.db import Database
from ingestion.storage.models import SentHash

__all__ = ["HttpMemorySink"]

log = structlog.get_logger("ingestion.memory")

_METRIC_NAME = "memory_engine"
_ENVELOPE = len(b'{"memories":[]}')
#: Ids per query when reading sent hashes (well under every driver's parameter limit).
_LOOKUP_CHUNK = 500


class _EngineBusy(Exception):
    """A 429, a 5xx: worth another attempt."""

    def __init__(self, status: int, retry_after: float | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after


class _TooLarge(Exception):
    """A 413: the batch must be split."""


class HttpMemorySink:
    """The memory engine over HTTP; see the module docstring for its guarantees."""

    kind = "http"

    def __init__(
        self,
        settings: Settings,
        db: Database,
        http: httpx.AsyncClient,
        *,
        attempts: int = 6,
        wait_initial: float = 0.5,
        wait_max: float = 30.0,
        wait_jitter: float = 1.0,
        max_inline_wait: float = 60.0,
    ) -> None:
        if not settings.memory_engine_url:
            raise ConfigurationError("MEMORY_ENGINE_URL is not set")
        self.settings = settings
        self.db = db
        self.http = http
        self.base_url = settings.memory_engine_url.rstrip("/")
        self.batch_size = settings.memory_batch_size
        self.batch_max_bytes = settings.memory_batch_max_bytes
        self.attempts = attempts
        self.wait_initial = wait_initial
        self.wait_max = wait_max
        self.wait_jitter = wait_jitter
        self.max_inline_wait = max_inline_wait
        #: HTTP requests sent, retries included (run statistics, benchmarks).
        self.requests = 0
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.memory_engine_api_key is not None:
            secret = settings.memory_engine_api_key.get_secret_value()
            self._headers["Authorization"] = f"Bearer {secret}"

    # --- the sink contract -------------------------------------------------------------------

    async def upsert(
        self, user_id: str, records: Sequence[MemoryRecord], *, force: bool = False
    ) -> int:
        """Send the records that changed since last accepted (all of them when `force`);
        returns how many were sent."""
        unique = list({record.id: record for record in records}.values())
        if not unique:
            return 0
        pending = unique if force else await self._changed(user_id, unique)
        for batch in self._batches(pending):
            await self._send_batch(user_id, batch)
        return len(pending)

    async def delete(self, user_id: str, record_ids: Sequence[str]) -> None:
        """Remove records by id (absent ids are not an error), then forget their hashes."""
        ids = list(dict.fromkeys(record_ids))
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            body = _dumps({"userId": user_id, "ids": chunk})
            await self._post("/memories/delete", body, endpoint="delete")
            async with self.db.session() as session:
                await session.execute(
                    delete(SentHash).where(
                        SentHash.user_id == user_id, SentHash.record_id.in_(chunk)
                    )
                )

    async def aclose(self) -> None:
        """Nothing to close: the HTTP client is shared and closed by its owner."""
        return

    # --- batching ------------------------------------------------------------------------------

    def _batches(
        self, records: Sequence[MemoryRecord]
    ) -> Iterator[list[tuple[MemoryRecord, bytes]]]:
        """Consecutive batches within the count and byte bounds (each record encoded once)."""
        batch: list[tuple[MemoryRecord, bytes]] = []
        size = _ENVELOPE
        for record in records:
            encoded = record.wire_json()
            extra = len(encoded) + (1 if batch else 0)
            if batch and (len(batch) >= self.batch_size or size + extra > self.batch_max_bytes):
                yield batch
                batch, size, extra = [], _ENVELOPE, len(encoded)
            batch.append((record, encoded))
            size += extra
        if batch:
            yield batch

    async def _send_batch(self, user_id: str, batch: list[tuple[MemoryRecord, bytes]]) -> None:
        body = b'{"memories":[' + b",".join(encoded for _, encoded in batch) + b"]}"
        try:
            await self._post("/memories/batch", body, endpoint="batch")
        except _TooLarge:
            if len(batch) == 1:
                raise PermanentError(
                    f"memory engine refused record {batch[0][0].id} as too large "
                    f"(HTTP 413, {len(body)} bytes)"
                ) from None
            half = len(batch) // 2
            await self._send_batch(user_id, batch[:half])
            await self._send_batch(user_id, batch[half:])
            return
        await self._remember(user_id, [record for record, _ in batch])

    # --- one request, with retries -------------------------------------------------------------

    async def _post(self, path: str, body: bytes, *, endpoint: str) -> None:
        """POST until a 2xx; raises as the module docstring says."""

        retries = 0

        def retry_on(exc: Exception) -> bool | float:
            nonlocal retries
            if isinstance(exc, _EngineBusy):
                if exc.retry_after is None:
                    return True
                if exc.retry_after > self.max_inline_wait:
                    return False
                # Retry-After is a floor: `Retry-After: 0` does not turn backoff into a busy loop.
                retries += 1
                backoff = min(self.wait_max, self.wait_initial * 2.0 ** (retries - 1))
                wait = max(exc.retry_after, backoff + random.uniform(0, self.wait_jitter))
                metrics.RATE_LIMIT_WAIT_SECONDS.labels(reason="retry_after").inc(wait)
                return wait
            return isinstance(exc, httpx.TransportError)

        url = f"{self.base_url}{path}"
        try:
            async for attempt in stamina.retry_context(
                on=retry_on,
                attempts=self.attempts,
                timeout=None,
                wait_initial=self.wait_initial,
                wait_max=self.wait_max,
                wait_jitter=self.wait_jitter,
            ):
                with attempt:
                    await self._post_once(url, body, endpoint)
                    return
        except _EngineBusy as exc:
            error = RateLimited if exc.status == 429 else RetryableError
            raise error(
                f"memory engine {path}: {exc}; gave up after retries",
                retry_after=exc.retry_after,
            ) from None
        except httpx.TransportError as exc:
            raise RetryableError(
                f"memory engine {path}: unreachable ({type(exc).__name__}: {exc}); "
                "gave up after retries"
            ) from None

    async def _post_once(self, url: str, body: bytes, endpoint: str) -> None:
        self.requests += 1
        started = time.perf_counter()
        try:
            response = await self.http.post(url, content=body, headers=self._headers)
        except httpx.TransportError as exc:
            metrics.API_REQUESTS.labels(
                provider=_METRIC_NAME, endpoint=endpoint, status="network_error"
            ).inc()
            metrics.API_RETRIES.labels(provider=_METRIC_NAME, reason="network").inc()
            log.warning("memory engine unreachable", endpoint=endpoint, error=type(exc).__name__)
            raise
        status = response.status_code
        metrics.API_REQUESTS.labels(
            provider=_METRIC_NAME, endpoint=endpoint, status=str(status)
        ).inc()
        metrics.API_LATENCY.labels(provider=_METRIC_NAME, endpoint=endpoint).observe(
            time.perf_counter() - started
        )
        if 200 <= status < 300:
            return
        message = _engine_message(response)
        if status == 429 or status >= 500:
            metrics.API_RETRIES.labels(provider=_METRIC_NAME, reason=f"HTTP {status}").inc()
            log.warning("memory engine busy", endpoint=endpoint, status=status, message=message)
            raise _EngineBusy(
                status, parse_retry_after(response.headers.get("retry-after")), message
            )
        if status == 413:
            raise _TooLarge(message)
        path = url.removeprefix(self.base_url)
        if status in (401, 403):
            raise ConfigurationError(
                f"memory engine {path}: HTTP {status}: {message} (check MEMORY_ENGINE_API_KEY)"
            )
        raise PermanentError(f"memory engine {path}: HTTP {status}: {message}")

    # --- sent hashes ---------------------------------------------------------------------------

    async def _changed(self, user_id: str, records: list[MemoryRecord]) -> list[MemoryRecord]:
        """The records whose hash differs from the one last accepted (or was never sent)."""
        sent: dict[str, str] = {}
        async with self.db.engine.connect() as connection:
            for start in range(0, len(records), _LOOKUP_CHUNK):
                ids = [r.id for r in records[start : start + _LOOKUP_CHUNK]]
                rows = await connection.execute(
                    select(SentHash.record_id, SentHash.content_hash).where(
                        SentHash.user_id == user_id, SentHash.record_id.in_(ids)
                    )
                )
                sent.update({row.record_id: row.content_hash for row in rows})
        return [r for r in records if sent.get(r.id) != r.content_hash]

    async def _remember(self, user_id: str, records: list[MemoryRecord]) -> None:
        """Store the hashes the engine just accepted."""
        now = datetime.now(UTC).replace(tzinfo=None)
        values = [
            {
                "user_id": user_id,
                "record_id": r.id,
                "content_hash": r.content_hash,
                "sent_at": now,
            }
            for r in records
        ]
        insert = sqlite.insert if self.db.kind == "sqlite" else postgresql.insert
        # Parameters passed separately: one cached statement, executed as a batched insert.
        statement = insert(SentHash)
        statement = statement.on_conflict_do_update(
            index_elements=[SentHash.user_id, SentHash.record_id],
            set_={
                "content_hash": statement.excluded.content_hash,
                "sent_at": statement.excluded.sent_at,
            },
        )
        async with self.db.engine.begin() as connection:
            await connection.execute(statement, values)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _engine_message(response: httpx.Response) -> str:
    """The engine's own explanation: `error`/`message`/`detail` of a JSON body, or its text."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if value:
                return str(value)[:500]
    return response.text.strip()[:500] or response.reason_phrase
