"""Retry delays (exponential, jittered, capped, never sooner than asked); the queue's names."""

from __future__ import annotations

from ingestion.config import Settings
from ingestion.worker import retry_delay


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    settings = Settings(job_retry_base_seconds=5, job_retry_max_seconds=60)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)]:
        delays = {retry_delay(settings, attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


def test_retry_delay_honours_retry_after() -> None:
    settings = Settings(job_retry_base_seconds=1, job_retry_max_seconds=60)
    assert retry_delay(settings, 1, retry_after=30) == 30


def test_queue_package_public_names() -> None:
    import ingestion.queue

    assert sorted(ingestion.queue.__all__) == [
        "Job",
        "Keys",
        "LocalJobQueue",
        "RedisJobQueue",
        "queue_stats_for",
        "redis_queue",
    ]


def test_default_key_names_are_the_contract() -> None:
    from ingestion.queue import Keys

    keys = Keys()
    assert (keys.stream, keys.group, keys.dead) == (
        "ingestion:jobs",
        "ingestion-workers",
        "ingestion:jobs:dead",
    )
