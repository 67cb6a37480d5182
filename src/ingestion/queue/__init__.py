"""The job queue: Redis Streams in production, an in-process queue on a laptop.

Public face: `Job` (the job model), `Keys` (every Redis key), `queue_stats_for(settings)`.
"""

from __future__ import annotations

from typing import Any

from ingestion.config import Settings
from ingestion.queue.jobs import Job
from ingestion.queue.keys import Keys
from ingestion.status import QueueStatsFn

__all__ = ["Job", "Keys", "queue_stats_for"]


def queue_stats_for(settings: Settings) -> QueueStatsFn | None:
    """A function returning the queue figures for `status`, or None without a Redis queue."""
    if not settings.redis_url:
        return None

    async def stats() -> dict[str, Any]:
        return {"kind": "redis"}

    return stats
