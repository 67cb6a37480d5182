"""The queue contract shared by the Redis Streams queue and the in-process queue.

Guarantees (both kinds): a job is removed only after its sync committed (at-least-once);
a second job for a (provider, user) that is queued or running is coalesced, not run in
parallel; a job that failed `JOB_MAX_ATTEMPTS` times, or permanently, is dead-lettered with
its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ingestion.queue.jobs import Job

__all__ = ["DeadLetter", "EnqueueResult", "JobQueue"]


@dataclass(frozen=True)
class EnqueueResult:
    job_id: str
    #: True when an equivalent job was already queued or running and this one was merged.
    coalesced: bool = False


@dataclass(frozen=True)
class DeadLetter:
    id: str
    type: str
    payload: str
    error: str
    failed_at: str
    attempts: int


class JobQueue(Protocol):
    #: `redis` or `in-process`.
    kind: str

    async def enqueue(self, job: Job) -> EnqueueResult: ...

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
