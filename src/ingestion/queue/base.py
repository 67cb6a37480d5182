"""The queue contract shared by the Redis Streams queue and the in-process queue.

Guarantees (both kinds): a job is removed only after its sync committed (at-least-once);
a second job for a (provider, user) that is queued or running is coalesced, not run in
parallel, and a coalesced request that widens the job (`forceFullSync`) is never dropped: the
queued job takes it when it starts, or a follow-up job with it is enqueued in the same step
that acknowledges the running one; a job that failed `JOB_MAX_ATTEMPTS` times, or
permanently, is dead-lettered with its error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ingestion.errors import MalformedJob
from ingestion.queue.jobs import Job

if TYPE_CHECKING:  # the queue imports no provider, not even through the engine
    from ingestion.sync import SyncLockFactory

__all__ = [
    "Consumer",
    "DeadLetter",
    "Delivery",
    "EnqueueResult",
    "JobQueue",
    "Widening",
    "is_entry_id",
]

#: What became of a coalesced request's widening options (`forceFullSync`):
#: `merged`: the queued job has not started; it runs with them.
#: `follow-up`: the job is running without them; a job with them is enqueued when it finishes.
#: `covered`: the job is already running with them; nothing more to do.
Widening = Literal["merged", "follow-up", "covered"]


@dataclass(frozen=True)
class EnqueueResult:
    job_id: str
    #: True when an equivalent job was already queued or running and this one was merged.
    coalesced: bool = False
    #: For a coalesced request that asked for more than a plain sync (`forceFullSync`): how the
    #: queue honours it. None when nothing was coalesced or there was nothing to widen.
    widening: Widening | None = None


#: A queue entry id: a Redis stream id (`<ms>-<seq>`, or `<ms>` alone), which the in-process
#: queue imitates. Anything else never names an entry (and Redis answers it with an error).
_ENTRY_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


def is_entry_id(value: str) -> bool:
    return _ENTRY_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    type: str
    payload: str
    error: str
    failed_at: str
    attempts: int
    #: Times the job died with this error for this (provider, user) since the entry was made.
    count: int = 1


class JobQueue(Protocol):
    #: `redis` or `in-process`.
    kind: str

    async def enqueue(self, job: Job, *, rerun: bool = False) -> EnqueueResult:
        """Add `job`, or coalesce it with the pair's queued or running job. `rerun` (a push
        notification: something changed just now) makes a running job be followed by one
        more plain run, since its reads may predate the change (`jobs.RERUN_FLAG`)."""
        ...

    async def stats(self) -> dict[str, Any]:
        """`{"kind", "length", "pending", "deadLetters", "oldestPendingSeconds"}`."""
        ...

    async def ping(self) -> None:
        """Raise when the queue cannot be reached (used by /readyz)."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    async def retry_dead(self, ids: list[str] | None) -> int:
        """Put dead jobs back on the queue (all when `ids` is None); returns how many."""
        ...

    async def purge_dead(self) -> int: ...

    async def aclose(self) -> None: ...


@dataclass
class Delivery:
    """One entry handed to a worker: the parsed job, or why it could not be parsed."""

    entry_id: str
    fields: dict[str, str]
    job: Job | None = None
    #: Set when the entry is not a valid job (it is dead-lettered at once with this error).
    error: str | None = None
    #: Times this entry was delivered (1 on first read; more after a reclaim).
    deliveries: int = 1
    #: A pending entry whose stream entry was deleted or trimmed: acknowledged and logged.
    gone: bool = False

    @classmethod
    def parse(cls, entry_id: str, fields: Mapping[str, str]) -> Delivery:
        data = dict(fields)
        try:
            job = Job.from_fields(data, entry_id=entry_id)
            return cls(entry_id, data, job=job)
        except MalformedJob as exc:
            return cls(entry_id, data, error=str(exc))

    @property
    def job_id(self) -> str:
        return self.job.job_id if self.job else ""


class Consumer(Protocol):
    """What a worker needs from a queue: read, settle and look after its deliveries.

    Every settling call (`complete`, `reschedule`, `dead_letter`) acknowledges the entry in the
    same atomic step as its other effect, so a job is never both re-queued and lost or doubled.
    """

    name: str

    async def start(self) -> None:
        """Create what is missing (the consumer group); safe to call again after a reconnect."""
        ...

    async def own_pending(self, count: int) -> list[Delivery]:
        """Entries already delivered to this consumer and not acknowledged (after a restart)."""
        ...

    async def fetch(self, count: int, timeout: float) -> list[Delivery]:
        """Up to `count` new entries, waiting at most `timeout` seconds for the first."""
        ...

    async def reclaim(self, count: int) -> list[Delivery]:
        """Entries left pending by another consumer longer than the visibility timeout."""
        ...

    async def begin(self, delivery: Delivery, job: Job) -> Job:
        """Mark `job` running and return it with the widening options that requests coalesced
        into it asked for (taken atomically: a later request gets a follow-up job instead)."""
        ...

    async def complete(self, delivery: Delivery) -> None:
        """Acknowledge; when widening requests arrived while the job ran, enqueue one follow-up
        job with them in the same atomic step."""
        ...

    async def reschedule(self, delivery: Delivery, job: Job, due: float | None) -> None:
        """Acknowledge and put `job` back, runnable at epoch `due` (None: now)."""
        ...

    async def dead_letter(self, delivery: Delivery, error: str, attempts: int) -> None: ...

    async def keep_alive(self, deliveries: list[Delivery]) -> None:
        """Tell the queue these running entries are still being worked on."""
        ...

    async def housekeeping(self) -> None:
        """Promote due delayed jobs; trim what nobody needs any more."""
        ...

    def sync_lock(self) -> SyncLockFactory:
        """One sync per (provider, user) at a time across every worker of this queue."""
        ...

    async def abandon(self, delivery: Delivery) -> None:
        """A job this consumer will not finish (shutdown past the grace period): give back
        what its start took (the pair's sync lock) and leave the entry pending, so another
        worker that reclaims it can run it at once."""
        ...

    async def leave(self) -> None:
        """The worker exits cleanly: forget this consumer if it holds nothing."""
        ...
