"""How long what the queue keeps lives: tick keys, dead letters (both queues share these rules).

- A **tick key** dedupes the schedulers of one tick; a scheduler enqueues a tick only until the
  provider's next tick, so the key lives one cron interval plus `TICK_TTL_MARGIN_SECONDS`.
- **Dead letters** are kept at most `DEAD_LETTER_MAX_ENTRIES` and `DEAD_LETTER_MAX_AGE_DAYS`. A
  job that dies with the same error for the same (provider, user) replaces the previous dead
  letter of that triple and carries its `count` up by one: an account with a missing scope
  leaves one entry however many ticks fail.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from ingestion.config import Settings

__all__ = [
    "DEAD_LETTER_CHUNK",
    "TICK_TTL_MARGIN_SECONDS",
    "dead_fingerprint",
    "tick_ttl",
]

#: Slack after the next tick (scheduler clocks differ; a tick is retried until the next one).
TICK_TTL_MARGIN_SECONDS = 60
#: A tick key for a provider whose schedule cannot be read (a plugin's) lives this long.
_FALLBACK_INTERVAL_SECONDS = 86_400
#: Dead letters read per round trip by `dlq retry --all` (never the whole stream at once).
DEAD_LETTER_CHUNK = 100


def tick_ttl(settings: Settings, provider: str, tick_epoch: int) -> int:
    """Seconds the tick key of `provider`'s tick at `tick_epoch` lives: about one interval."""
    try:
        tick = datetime.fromtimestamp(tick_epoch, UTC)
        interval = (settings.next_tick(provider, tick) - tick).total_seconds()
    except (AttributeError, ValueError, OverflowError):
        interval = _FALLBACK_INTERVAL_SECONDS
    return int(max(1.0, interval)) + TICK_TTL_MARGIN_SECONDS


def dead_fingerprint(job_type: str, user_id: str, error: str) -> str:
    """The identity of a dead letter for de-duplication: (provider, user, error)."""
    digest = hashlib.sha256()
    for part in (job_type, user_id, error):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]
