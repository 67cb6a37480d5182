"""Items are transformed off the event loop, one at a time, and one bad item never stops a sync.

A provider hands each item's transform to `ItemGuard.run` (its `SyncContext.items`). Promised:

- **Off the event loop.** The transform runs on a small pool of worker threads
  (`ingestion-transform`), so MIME parsing, HTML conversion, quote trimming and diffs never
  hold up heartbeats, claim keep-alives, sync-lock renewals or the HTTP API. A thread rather
  than a process: every transform is linear with capped input (`ingestion.providers.limits`),
  the worst item of the adversarial corpus takes a fraction of a second, and a process pool
  would pickle every payload (up to tens of MB) both ways for nothing. The GIL is released to
  the loop every few milliseconds (`sys.getswitchinterval()`).
- **A time budget per item** (`TRANSFORM_TIME_BUDGET`). Past it the transform's remaining
  costly steps take their cheap fallback (cooperatively: `limits.over_budget()`), and the item
  is stored with what was extracted and counted `defective`. A thread cannot be interrupted, so
  an item still running at `HARD_LIMIT_FACTOR` times the budget is abandoned: its `fallback`
  record is stored (counted `defective`) or, without one, it is `skipped`. It is never
  retried: the cursor moves past it like any other item.
- **Isolation.** A transform that raises (`MalformedItem`, or anything but an
  `IngestionError`, which belongs to the sync) is logged and counted `skipped` (or its
  `fallback` stored, counted `defective`), and the sync goes on.

The counts go to the run's statistics (`defective`, `skipped`: the sync summary, `ingestion
status` and the run history) and to `ingestion_items_total{action="defective"|"skipped"}`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ingestion import metrics
from ingestion.errors import IngestionError, MalformedItem, describe_unexpected
from ingestion.providers.limits import reset_deadline, set_deadline

if TYPE_CHECKING:
    import structlog

__all__ = ["HARD_LIMIT_FACTOR", "ItemGuard", "transform_pool"]

T = TypeVar("T")

#: An item still running at this many times its budget is abandoned (fallback or skipped).
HARD_LIMIT_FACTOR = 5
#: Threads that run transforms (per process); more would only fight over the GIL.
POOL_THREADS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def transform_pool() -> ThreadPoolExecutor:
    """The process's transform threads (created on first use; daemon-like, never joined)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="ingestion-transform")
        return _pool


def _timed(
    budget: float, fn: Callable[..., T], args: tuple[Any, ...], on_start: Callable[[], None]
) -> tuple[T, bool]:
    """Run `fn(*args)` under the item deadline; the result and whether it overran."""
    on_start()
    started = time.monotonic()
    token = set_deadline(started + budget)
    try:
        result = fn(*args)
    finally:
        reset_deadline(token)
    return result, time.monotonic() - started > budget


class ItemGuard:
    """Runs one sync's item transforms; counts what went wrong with them."""

    def __init__(
        self,
        provider: str,
        log: structlog.stdlib.BoundLogger,
        budget: float,
        *,
        hard_limit: float | None = None,
    ) -> None:
        self.provider = provider
        self.log = log
        self.budget = budget
        #: Seconds after its start at which a running item is abandoned.
        self.hard_limit = budget * HARD_LIMIT_FACTOR if hard_limit is None else hard_limit
        self.defective = 0
        self.skipped = 0
        #: One of this sync's items on a thread at a time (a provider reading pages ahead asks
        #: for several at once): transforms competing for the GIL with each other and with the
        #: event loop only cost switches. An abandoned item gives its turn back when abandoned,
        #: so a stuck thread never holds up the sync's next item (the pool has other threads).
        self._turn = asyncio.Semaphore(1)

    async def _off_loop(self, fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[T, bool]:
        """`fn(*args)` on a transform thread; `TimeoutError` once it has run `hard_limit`
        seconds (the clock starts when a thread takes it, not while it waits for one)."""
        loop = asyncio.get_running_loop()
        began: list[float] = []
        future = loop.run_in_executor(
            transform_pool(), _timed, self.budget, fn, args, lambda: began.append(time.monotonic())
        )
        wait = self.hard_limit
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), wait)
            except TimeoutError:
                if began and time.monotonic() - began[0] >= self.hard_limit:
                    raise
                # Still queued behind other items, or started late: wait for the rest.
                wait = self.hard_limit - (time.monotonic() - began[0]) if began else wait

    async def run(
        self,
        item_id: str,
        fn: Callable[..., T],
        *args: Any,
        fallback: Callable[[], T] | None = None,
    ) -> T | None:
        """`fn(*args)` on a transform thread; `None` when the item is skipped.

        `fallback` (cheap; also off the loop, with the same limit) gives the record of an item
        whose transform raised or was abandoned.
        """
        try:
            async with self._turn:
                result, overran = await self._off_loop(fn, args)
        except MalformedItem as exc:
            return await self._failed(item_id, str(exc), fallback)
        except IngestionError:
            raise
        except TimeoutError:
            return await self._failed(item_id, f"abandoned after {self.hard_limit:g} s", fallback)
        except Exception as exc:  # its message may quote the item: the class only
            return await self._failed(item_id, describe_unexpected(exc), fallback)
        if overran:
            self.flag(item_id, [f"over the {self.budget:g} s time budget"])
        return result

    def flag(self, item_id: str, defects: list[str]) -> None:
        """Count an item stored with defects (the caller keeps its record)."""
        self.defective += 1
        metrics.ITEMS.labels(provider=self.provider, action="defective").inc()
        self.log.warning(
            "item ingested with defects",
            item_id=item_id[:300],
            defects=[d[:300] for d in defects[:20]],
        )

    async def _failed(self, item_id: str, error: str, fallback: Callable[[], T] | None) -> T | None:
        error = error[:500]
        if fallback is not None:
            try:
                record, _ = await self._off_loop(fallback, ())
            except TimeoutError:
                error += "; fallback abandoned too"
            except Exception as exc:
                error += f"; fallback: {describe_unexpected(exc)}"
            else:
                self.flag(item_id, [f"transform failed, fallback stored: {error}"])
                return record
        self.skip(item_id, error)
        return None

    def skip(self, item_id: str, error: str) -> None:
        """Count an item no record could be made of (the caller drops it)."""
        self.skipped += 1
        metrics.ITEMS.labels(provider=self.provider, action="skipped").inc()
        self.log.error("item skipped", item_id=item_id[:300], error=error[:500])

    def take_counts(self) -> dict[str, int]:
        """The counts since the last call (non-zero ones), reset."""
        counts = {"defective": self.defective, "skipped": self.skipped}
        self.defective = self.skipped = 0
        return {k: v for k, v in counts.items() if v}
