"""Every Prometheus metric of the service, in one place (names start with `ingestion_`).

Counters and histograms are updated where the event happens (worker, sync engine, API client,
token service); the queue and cursor-age gauges are refreshed when `/metrics` is scraped
(`refresh_gauges`), so they are as fresh as the scrape.

Several processes on one host (API, scheduler, workers) are summed into one exposition with
prometheus_client's multiprocess mode: set `PROMETHEUS_MULTIPROC_DIR` to an empty directory
shared by all of them, in the environment of every process *before it starts* (prometheus_client
reads it when it is imported). Counters and histograms are then summed over all processes,
including ones that exited (a SIGKILLed worker's counts stay); the gauges are written by the
process that serves `/metrics` and read as the most recent value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from ingestion.config import Settings
from ingestion.errors import ConfigurationError

__all__ = [
    "API_LATENCY",
    "API_REQUESTS",
    "API_RETRIES",
    "CONTENT_TYPE",
    "CURSOR_AGE",
    "ITEMS",
    "JOBS",
    "PUSH",
    "QUEUE",
    "QUOTA_EXHAUSTED",
    "RATE_LIMIT_WAIT_SECONDS",
    "SYNC_DURATION",
    "TOKEN_REFRESHES",
    "check_multiprocess",
    "exposition",
    "multiprocess_enabled",
    "refresh_gauges",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

JOBS = Counter(
    "ingestion_jobs_total",
    "Sync jobs by provider and outcome (started, succeeded, failed, retried, dead_lettered, "
    "coalesced, deferred).",
    ["provider", "outcome"],
)
PUSH = Counter(
    "ingestion_push_total",
    "Push deliveries by provider and outcome (enqueued, coalesced, acknowledged, and every "
    "rejection: unauthenticated, forbidden, replayed, too_large, malformed, unknown, stale...).",
    ["provider", "outcome"],
)
ITEMS = Counter(
    "ingestion_items_total",
    "Items by provider and action (fetched, upserted, deleted, unchanged; defective: stored "
    "with defects or over the time budget; skipped: no record could be made).",
    ["provider", "action"],
)
API_REQUESTS = Counter(
    "ingestion_api_requests_total",
    "Requests to external APIs by provider, endpoint class and HTTP status.",
    ["provider", "endpoint", "status"],
)
API_LATENCY = Histogram(
    "ingestion_api_request_seconds",
    "Latency of external API requests.",
    ["provider", "endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_RETRIES = Counter(
    "ingestion_api_retries_total",
    "Retried external API answers (429, 5xx, quota) by provider and reason.",
    ["provider", "reason"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "ingestion_rate_limit_wait_seconds_total",
    "Seconds spent waiting for rate limits (pacing, retry_after).",
    ["reason"],
)
TOKEN_REFRESHES = Counter(
    "ingestion_token_refreshes_total",
    "OAuth token refreshes by account provider and outcome (ok, reused, failed, reauth).",
    ["provider", "outcome"],
)
QUOTA_EXHAUSTED = Counter(
    "ingestion_quota_exhausted_total",
    "Syncs stopped by a spent long-period quota (X's usage cap), by provider; the account's "
    "status is quota_exhausted until the quota resets.",
    ["provider"],
)
SYNC_DURATION = Histogram(
    "ingestion_sync_duration_seconds",
    "Duration of one sync, by provider and status.",
    ["provider", "status"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
QUEUE = Gauge(
    "ingestion_queue",
    "Queue figures: length, pending, dead_letters, oldest_pending_seconds.",
    ["figure"],
    multiprocess_mode="mostrecent",
)
CURSOR_AGE = Gauge(
    "ingestion_cursor_age_seconds",
    "Seconds since the last successful sync of the (user, provider) pairs of a provider: "
    "stat = max (the stalest user), median, min.",
    ["provider", "stat"],
    multiprocess_mode="mostrecent",
)


def multiprocess_enabled() -> bool:
    """True when prometheus_client writes its values to `PROMETHEUS_MULTIPROC_DIR` files."""
    return values.ValueClass is not values.MutexValue


def check_multiprocess(settings: Settings) -> None:
    """Refuse a multiprocess directory that prometheus_client did not pick up.

    `PROMETHEUS_MULTIPROC_DIR` given only in `.env` is seen by the settings but not by
    prometheus_client (which reads the process environment at import): each process would
    then count alone and `/metrics` would show one process's share.
    """
    directory = settings.prometheus_multiproc_dir
    if directory is None:
        return
    if not multiprocess_enabled():
        raise ConfigurationError(
            "PROMETHEUS_MULTIPROC_DIR must be set in the process environment (not only in .env)"
        )
    if not directory.is_dir():
        raise ConfigurationError(f"PROMETHEUS_MULTIPROC_DIR: {directory} is not a directory")


def exposition() -> bytes:
    """The Prometheus text of every metric: all processes' when in multiprocess mode."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def refresh_gauges(
    queue_stats: Mapping[str, Any] | None, cursor_ages: Mapping[str, Mapping[str, float]]
) -> None:
    """Set the scrape-time gauges.

    `queue_stats` is `JobQueue.stats()` (every numeric figure becomes `ingestion_queue{figure}`,
    e.g. `length`, `pending`, `dead_letters`, `oldest_pending_seconds`); `cursor_ages` maps a
    provider to its `max`, `median` and `min` seconds since the last successful sync of its
    (user, provider) pairs, aggregated in SQL (`ingestion.storage.overview.Aggregate`). Pairs
    never synced successfully are left out of the cursor age (their status shows on the
    status page).
    """
    if queue_stats:
        for key, value in queue_stats.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                QUEUE.labels(figure=_snake(key)).set(value)
    for provider, ages in cursor_ages.items():
        for stat in ("max", "median", "min"):
            if stat in ages:
                CURSOR_AGE.labels(provider=provider, stat=stat).set(ages[stat])
