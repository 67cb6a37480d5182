"""Every Prometheus metric of the service, in one place (names start with `ingestion_`).

Counters and histograms are updated where the event happens (worker, sync engine, API client,
token service); gauges about the queue are refreshed when `/metrics` is scraped.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "API_LATENCY",
    "API_REQUESTS",
    "API_RETRIES",
    "CURSOR_AGE",
    "ITEMS",
    "JOBS",
    "QUEUE",
    "RATE_LIMIT_WAIT_SECONDS",
    "SYNC_DURATION",
    "TOKEN_REFRESHES",
]

JOBS = Counter(
    "ingestion_jobs_total",
    "Sync jobs by provider and outcome (started, succeeded, failed, retried, dead_lettered, "
    "coalesced, deferred).",
    ["provider", "outcome"],
)
ITEMS = Counter(
    "ingestion_items_total",
    "Items by provider and action (fetched, upserted, deleted, unchanged).",
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
    "Seconds since the oldest last successful sync, per provider.",
    ["provider"],
    multiprocess_mode="mostrecent",
)
