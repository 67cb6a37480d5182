"""The request pacer keeps the average rate under the budget, whatever a single call costs."""

from __future__ import annotations

import time

from ingestion.providers.http import Pacer


async def test_calls_dearer_than_the_bucket_are_paced_at_the_budget() -> None:
    pacer = Pacer(100, 1.0, burst=10)  # 100 units per second, bucket of 10
    started = time.monotonic()
    for _ in range(5):
        await pacer.acquire(40)  # 200 units in all
    elapsed = time.monotonic() - started
    # The first call drains the bucket into debt; 200 units at 100/s take at least ~1.5 s
    # (the bucket's 10 units were free at the start).
    assert elapsed >= 1.5


async def test_cheap_calls_within_the_burst_do_not_wait() -> None:
    pacer = Pacer(100, 1.0, burst=10)
    for _ in range(10):
        await pacer.acquire(1)
    assert pacer.waited == 0
