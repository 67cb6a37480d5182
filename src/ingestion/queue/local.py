"""The in-process queue of embedded mode (`ingestion run` with REDIS_URL unset).

Same job model, same retry, dead-letter, coalescing and widening behaviour (a coalesced
`forceFullSync` is taken by the queued job or becomes a follow-up job) as the Redis queue, held in
memory by one process. Jobs do not survive a restart: the next scheduler tick re-enqueues them
and the sync state (the cursor) is durable in the database. There is no other consumer, so
nothing is ever reclaimed and `keep_alive` has nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ingestion.config import Settings
from ingestion.queue.base import DeadLetter, Delivery, EnqueueResult, Widening
from ingestion.queue.jobs import RERUN_FLAG, Job, JobOptions, widened, widening_flags
from ingestion.queue.locks import LocalSyncLock
from ingestion.queue.retention import dead_fingerprint, tick_ttl

if TYPE_CHECKING:  # the queue imports no provider, not even through the engine
    from ingestion.sync import SyncLockFactory

__all__ = ["LocalJobQueue"]


class LocalJobQueue:
    """A `JobQueue` and a `Consumer` in one object, for a single process.

    Retention follows the Redis queue's (`queue.retention`): ticks are remembered about one cron
    interval, dead letters are bounded and de-duplicated, and a deferral waits at most
    `JOB_MAX_DEFER_SECONDS`, so the pair's coalescing marker clears by then at the latest.
    """

    kind = "in-process"
    name = "in-process"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._ready: deque[tuple[str, dict[str, str]]] = deque()
        self._pending: dict[str, tuple[float, dict[str, str]]] = {}
        self._delayed: list[tuple[float, int, dict[str, str]]] = []
        self._active: dict[tuple[str, str], str] = {}
        #: Widening flags of coalesced requests not yet taken by a run of the pair.
        self._widen: dict[tuple[str, str], set[str]] = {}
        #: The pair's running job: its id and the widening flags it runs with.
        self._running: dict[tuple[str, str], tuple[str, set[str]]] = {}
        #: (provider, user, tick) -> when to forget it (epoch seconds).
        self._ticks: dict[tuple[str, str, int], float] = {}
        self._ticks_pruned = time.time()
        #: Dead letters by entry id, oldest first; `_dead_index`: fingerprint -> entry id.
        self._dead: dict[str, dict[str, str]] = {}
        self._dead_index: dict[str, str] = {}
        self._seq = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._lock = LocalSyncLock()

    def _new_id(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._seq)}"

    def _push(self, fields: dict[str, str], due: float) -> None:
        if due > time.time():
            heapq.heappush(self._delayed, (due, next(self._seq), fields))
        else:
            self._ready.append((self._new_id(), fields))
        self._wakeup.set()

    # --- producer side ---------------------------------------------------------------------------
    def _add(
        self, job: Job, due: float, tick: int | None, rerun: bool = False
    ) -> tuple[str, str, Widening | None]:
        pair = (job.provider, job.user_id)
        if tick is not None:
            self._forget_old_ticks()
            if (*pair, tick) in self._ticks:
                return "duplicate", "", None
            ttl = tick_ttl(self.settings, job.provider, tick)
            self._ticks[(*pair, tick)] = time.time() + ttl
        if pair in self._active:
            current = self._active[pair]
            return "coalesced", current, self._record_widening(pair, current, job, rerun)
        job_id = job.job_id or uuid.uuid4().hex
        self._active[pair] = job_id
        fields = Job(job.provider, job.user_id, job.options, job_id=job_id).to_fields()
        self._push(fields, due)
        return "enqueued", job_id, None

    def _forget_old_ticks(self) -> None:
        now = time.time()
        if now - self._ticks_pruned < 60:
            return
        self._ticks_pruned = now
        self._ticks = {tick: until for tick, until in self._ticks.items() if until > now}

    def _record_widening(
        self, pair: tuple[str, str], current: str, job: Job, rerun: bool = False
    ) -> Widening | None:
        flags = set(widening_flags(job.options)) | ({RERUN_FLAG} if rerun else set())
        if not flags:
            return None
        running = self._running.get(pair)
        if running is not None and running[0] == current:
            if flags <= running[1]:
                return "covered"
            widening: Widening = "follow-up"
        else:
            widening = "merged"
        self._widen.setdefault(pair, set()).update(flags)
        return widening

    async def enqueue(self, job: Job, *, rerun: bool = False) -> EnqueueResult:
        outcome, job_id, widening = self._add(job, 0.0, None, rerun)
        return EnqueueResult(job_id=job_id, coalesced=outcome == "coalesced", widening=widening)

    async def enqueue_tick(self, job: Job, tick_epoch: int, due: float) -> str:
        return self._add(job, due, tick_epoch)[0]

    async def enqueue_ticks(self, jobs: Sequence[tuple[Job, float]], tick_epoch: int) -> list[str]:
        return [self._add(job, due, tick_epoch)[0] for job, due in jobs]

    async def stats(self) -> dict[str, Any]:
        oldest = min((t for t, _ in self._pending.values()), default=None)
        return {
            "kind": self.kind,
            "length": len(self._ready) + len(self._pending),
            "waiting": len(self._ready),
            "pending": len(self._pending),
            "delayed": len(self._delayed),
            "deadLetters": len(self._dead),
            "oldestPendingSeconds": round(time.monotonic() - oldest, 1) if oldest else None,
        }

    async def ping(self) -> None:
        return None

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._trim_dead()
        return [
            DeadLetter(
                id=entry_id,
                type=fields.get("type", ""),
                payload=fields.get("payload", ""),
                error=fields.get("error", ""),
                failed_at=fields.get("failedAt", ""),
                attempts=int(fields.get("attempts", "0") or 0),
                count=int(fields.get("count", "1") or 1),
            )
            for entry_id, fields in itertools.islice(self._dead.items(), limit)
        ]

    async def retry_dead(self, ids: list[str] | None) -> int:
        wanted = list(self._dead) if ids is None else [i for i in ids if i in self._dead]
        chosen = [(entry_id, self._dead.pop(entry_id)) for entry_id in dict.fromkeys(wanted)]
        for entry in chosen:
            fields = {
                k: v
                for k, v in entry[1].items()
                if k not in ("error", "failedAt", "attempts", "deferrals", "count")
            }
            fields["attempt"] = "1"
            delivery = Delivery.parse(entry[0], fields)
            if delivery.job:
                self._active.setdefault(
                    (delivery.job.provider, delivery.job.user_id), delivery.job.job_id
                )
            self._push(fields, 0.0)
        return len(chosen)

    async def purge_dead(self) -> int:
        count = len(self._dead)
        self._dead.clear()
        self._dead_index.clear()
        return count

    async def aclose(self) -> None:
        return None

    # --- consumer side ---------------------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def own_pending(self, count: int) -> list[Delivery]:
        return []

    def _promote(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            self._ready.append((self._new_id(), heapq.heappop(self._delayed)[2]))

    async def fetch(self, count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            self._promote()
            if self._ready:
                break
            wait = deadline - time.monotonic()
            if self._delayed:
                wait = min(wait, self._delayed[0][0] - time.time())
            if deadline - time.monotonic() <= 0:
                return []
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.001, wait))
        result: list[Delivery] = []
        while self._ready and len(result) < count:
            entry_id, fields = self._ready.popleft()
            self._pending[entry_id] = (time.monotonic(), fields)
            result.append(Delivery.parse(entry_id, fields))
        return result

    async def reclaim(self, count: int) -> list[Delivery]:
        return []

    async def begin(self, delivery: Delivery, job: Job) -> Job:
        pair = (job.provider, job.user_id)
        running = self._running.get(pair)
        flags = running[1] if running is not None and running[0] == job.job_id else set()
        flags |= set(widening_flags(job.options)) | self._widen.pop(pair, set())
        flags.discard(RERUN_FLAG)  # satisfied by this run starting; never covers a later one
        self._running[pair] = (job.job_id, flags)
        options = widened(job.options, flags)
        return job if options == job.options else replace(job, options=options)

    def _settle(self, delivery: Delivery, *, clear: bool, completed: bool = False) -> None:
        self._pending.pop(delivery.entry_id, None)
        job = delivery.job
        if job is None:
            return
        pair = (job.provider, job.user_id)
        running = self._running.get(pair)
        if running is not None and running[0] == job.job_id:
            del self._running[pair]
            if not completed and running[1]:  # taken flags wait for the next run
                self._widen.setdefault(pair, set()).update(running[1])
        if clear and self._active.get(pair) == job.job_id:
            del self._active[pair]

    async def complete(self, delivery: Delivery) -> None:
        """Acknowledge; widening requested while the job ran becomes one follow-up job."""
        job = delivery.job
        follow_up = (
            job is not None
            and self._active.get((job.provider, job.user_id)) == job.job_id
            and self._widen.get((job.provider, job.user_id))
        )
        self._settle(delivery, clear=True, completed=True)
        if job is not None and follow_up:
            pair = (job.provider, job.user_id)
            options = widened(JobOptions(), self._widen.pop(pair))
            next_job = Job(job.provider, job.user_id, options, job_id=uuid.uuid4().hex)
            self._active[pair] = next_job.job_id
            self._push(next_job.to_fields(), 0.0)

    async def reschedule(self, delivery: Delivery, job: Job, due: float | None) -> None:
        """Put `job` back at `due`, at most `JOB_MAX_DEFER_SECONDS` away (a non-finite `due`
        waits that long): the pair's marker, held until the job settles, clears by then."""
        self._settle(delivery, clear=False)
        longest = time.time() + self.settings.job_max_defer_seconds
        if due is not None:
            due = min(due, longest) if math.isfinite(due) else (longest if due > 0 else None)
        self._push(job.to_fields(), due or 0.0)

    async def dead_letter(self, delivery: Delivery, error: str, attempts: int) -> None:
        """Dead-letter the job; a dead letter of the same (provider, user, error) is replaced
        and counted up; the list is bounded by `DEAD_LETTER_MAX_ENTRIES` and age."""
        self._settle(delivery, clear=True)
        fields = {k: v for k, v in delivery.fields.items() if k != "count"}
        fields.update(
            error=error[:2000],
            failedAt=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            attempts=str(attempts),
        )
        user_id = delivery.job.user_id if delivery.job else ""
        fingerprint = dead_fingerprint(fields.get("type", ""), user_id, fields["error"])
        previous = self._dead.pop(self._dead_index.get(fingerprint, ""), None)
        fields["count"] = str(int(previous.get("count", "1") or 1) + 1 if previous else 1)
        entry_id = self._new_id()
        self._dead[entry_id] = fields
        self._dead_index[fingerprint] = entry_id
        self._trim_dead()

    def _trim_dead(self) -> None:
        oldest_ms = (time.time() - self.settings.dead_letter_max_age_days * 86_400) * 1000
        limit = self.settings.dead_letter_max_entries
        for entry_id in list(self._dead):
            if len(self._dead) <= limit and int(entry_id.split("-", 1)[0]) >= oldest_ms:
                break
            del self._dead[entry_id]
        if len(self._dead_index) > 2 * len(self._dead) + 100:
            live = set(self._dead)
            self._dead_index = {f: i for f, i in self._dead_index.items() if i in live}

    async def keep_alive(self, deliveries: list[Delivery]) -> None:
        return None

    async def housekeeping(self) -> None:
        self._promote()
        self._trim_dead()
        if self._ready:
            self._wakeup.set()

    async def abandon(self, delivery: Delivery) -> None:
        """Nothing to give back: the in-process queue takes no lock at a job's start (the sync
        engine's own lock is released when the cancelled job unwinds)."""
        return

    def sync_lock(self) -> SyncLockFactory:
        return self._lock

    async def leave(self) -> None:
        return None
