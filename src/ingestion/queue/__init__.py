"""The job queue: Redis Streams in production, an in-process queue on a laptop.

Public face: `Job` (the job model), `Keys` (every Redis key), `redis_queue(settings)`,
`LocalJobQueue`, `queue_stats_for(settings)`. Both queues keep the contract of `queue.base`:
at-least-once delivery, coalescing per (provider, user), retries and dead letters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingestion.config import Settings
from ingestion.errors import ConfigurationError
from ingestion.queue.jobs import Job
from ingestion.queue.keys import Keys
from ingestion.queue.local import LocalJobQueue
from ingestion.queue.redis_streams import RedisJobQueue

if TYPE_CHECKING:  # the queue imports no provider, not even through the engine
    from ingestion.status import QueueStatsFn

__all__ = ["Job", "Keys", "LocalJobQueue", "RedisJobQueue", "queue_stats_for", "redis_queue"]


def redis_queue(settings: Settings) -> RedisJobQueue:
    """The Redis queue; `ConfigurationError` when REDIS_URL is unset."""
    if not settings.redis_url:
        raise ConfigurationError("REDIS_URL is not set: this command needs the Redis job queue")
    return RedisJobQueue(settings)


def queue_stats_for(settings: Settings) -> QueueStatsFn | None:
    """A function returning the queue figures for `status`, or None without a Redis queue.

    Figures: `length` (entries on the stream), `waiting` (not yet delivered), `pending`
    (delivered, not acknowledged), `delayed` (waiting for a retry time), `deadLetters`,
    `oldestPendingSeconds`. An unreachable Redis gives `{"kind": "redis", "error": …}`.
    """
    if not settings.redis_url:
        return None

    async def stats() -> dict[str, Any]:
        queue = RedisJobQueue(settings)
        try:
            return await queue.stats()
        except Exception as exc:
            return {"kind": "redis", "error": f"queue unreachable: {type(exc).__name__}"}
        finally:
            await queue.aclose()

    return stats
