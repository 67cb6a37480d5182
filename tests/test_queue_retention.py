"""Bounded waits and bounded retention of both queues (in-process and Redis), through the worker:
an absurd `retry_after` cannot park a job or its pair's coalescing marker, dead letters are
de-duplicated and trimmed, tick keys live about one cron interval, `dlq retry --all` reads the
dead-letter stream in chunks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from ingestion.config import Settings
from ingestion.providers import registry
from ingestion.queue import Keys, LocalJobQueue, RedisJobQueue
from ingestion.queue.base import Consumer
from ingestion.queue.jobs import Job
from ingestion.queue.retention import DEAD_LETTER_CHUNK
from ingestion.services import Services
from ingestion.storage.state import SyncStateStore
from tests.queue_helpers import add_accounts, running_worker, wait_for
from tests.queue_scripted_provider import PROVIDER, ScriptedProvider


@dataclass
class Env:
    settings: Settings
    queue: LocalJobQueue | RedisJobQueue
    consumer: Consumer
    services: Services
    redis: Redis | None

    async def ok_runs(self, user: str) -> int:
        runs = await SyncStateStore(self.services.db).recent_runs(500)
        return sum(1 for r in runs if r.user_id == user and r.status == "ok")


@pytest.fixture(params=["in-process", "redis"])
async def env(
    request: pytest.FixtureRequest,
    namespace: str,
    redis_url: str,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Env]:
    monkeypatch.setitem(registry._overrides, PROVIDER, ScriptedProvider)
    settings = Settings(
        redis_url=redis_url if request.param == "redis" else None,
        redis_namespace=namespace,
        database_url=sqlite_url,
        job_retry_base_seconds=0.02,
        job_retry_max_seconds=0.05,
        job_max_attempts=1,
        job_max_defer_seconds=1.0,
        job_visibility_timeout=5,
        dead_letter_max_entries=3,
        schedule_jitter_seconds=0,
    )
    queue: LocalJobQueue | RedisJobQueue
    consumer: Consumer
    redis: Redis | None = None
    if request.param == "redis":
        queue = RedisJobQueue(settings)
        consumer = queue.consumer()
        await consumer.start()
        redis = Redis.from_url(redis_url, decode_responses=True)
    else:
        queue = consumer = LocalJobQueue(settings)
    services = await Services.open(settings, lock=consumer.sync_lock())
    try:
        yield Env(settings, queue, consumer, services, redis)
    finally:
        await services.aclose()
        await queue.aclose()
        if redis is not None:
            await redis.aclose()


@pytest.mark.parametrize("kind", ["farfuture", "forever"])
async def test_an_absurd_retry_after_defers_at_most_job_max_defer_seconds(
    env: Env, kind: str
) -> None:
    """A job rate-limited with `retry_after` 1e308 or inf runs again within
    JOB_MAX_DEFER_SECONDS (1 s here), and its pair's marker clears once it completed."""
    user = f"{kind}-{uuid.uuid4().hex[:8]}"
    await add_accounts(env.services, [user])
    await env.queue.enqueue(Job(PROVIDER, user))
    started = time.monotonic()
    async with running_worker(env.settings, env.consumer, env.services):
        await wait_for(lambda: env.ok_runs(user), timeout=15)
        elapsed = time.monotonic() - started
        # The pair is free again: a new request is a new job, not coalesced into a parked one.
        assert not (await env.queue.enqueue(Job(PROVIDER, user))).coalesced
        await wait_for(lambda: _at_least(env.ok_runs(user), 2), timeout=15)
    assert elapsed < 10, elapsed
    if env.redis is not None:
        keys = Keys(env.settings.redis_namespace)
        assert await env.redis.zcard(keys.delayed) == 0
        assert not await env.redis.exists(keys.active(PROVIDER, user))
        assert not await env.redis.exists(keys.sync_lock(PROVIDER, user))


async def test_redis_deferral_is_clamped_and_marker_outlives_the_wait(
    namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Straight on the consumer: a due of inf / 1e308 is stored at most JOB_MAX_DEFER_SECONDS
    ahead, and the pair's marker lives at least as long as the wait (never shorter: no
    duplicate job), at most the wait plus its usual safety margin."""
    settings = Settings(redis_url=redis_url, redis_namespace=namespace, job_max_defer_seconds=600)
    queue = RedisJobQueue(settings)
    consumer = queue.consumer()
    await consumer.start()
    redis = Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(namespace)
    try:
        for due in (float("inf"), 1e308):
            user = f"u-{uuid.uuid4().hex[:8]}"
            await queue.enqueue(Job(PROVIDER, user))
            [delivery] = await consumer.fetch(1, 1.0)
            assert delivery.job is not None
            now = time.time()
            await consumer.reschedule(delivery, delivery.job, due)
            [(_, score)] = await redis.zrange(keys.delayed, 0, -1, withscores=True)
            assert now < score <= now + 601
            ttl = await redis.ttl(keys.active(PROVIDER, user))
            assert 600 <= ttl <= 600 + queue.active_ttl + 1
            await redis.delete(keys.delayed)
    finally:
        await queue.aclose()
        await redis.aclose()


async def test_dead_letters_are_deduplicated_per_pair_and_error_and_bounded(env: Env) -> None:
    """The same permanent failure of one pair, three times: one dead letter with count 3.
    Five distinct failing pairs with DEAD_LETTER_MAX_ENTRIES=3: only the newest three stay."""
    same = f"permanent-{uuid.uuid4().hex[:8]}"
    others = [f"permanent-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    await add_accounts(env.services, [same, *others])
    async with running_worker(env.settings, env.consumer, env.services):
        for attempt in range(1, 4):
            await env.queue.enqueue(Job(PROVIDER, same))

            async def counted(expected: int = attempt) -> bool:
                return [d.count for d in await env.queue.dead_letters()] == [expected]

            await wait_for(counted)
        [dead] = await env.queue.dead_letters()
        assert dead.error == "repository was deleted"
        assert f'"{same}"' in dead.payload
        for user in others:
            await env.queue.enqueue(Job(PROVIDER, user))

        async def trimmed() -> bool:
            letters = await env.queue.dead_letters()
            users = [json.loads(d.payload)["userId"] for d in letters]
            # Four newer failures arrived after `same`: it and the oldest of them are gone.
            return len(users) == 3 and set(users) < set(others)

        await wait_for(trimmed)
    assert (await env.queue.stats())["deadLetters"] == 3


async def test_dead_letters_older_than_the_age_limit_are_trimmed(env: Env) -> None:
    env.settings.dead_letter_max_age_days = 1.0 / 86_400  # one second
    user = f"permanent-{uuid.uuid4().hex[:8]}"
    await add_accounts(env.services, [user])
    async with running_worker(env.settings, env.consumer, env.services):
        await env.queue.enqueue(Job(PROVIDER, user))
        await wait_for(env.queue.dead_letters)
        # Nothing new arrives: housekeeping alone ages it out.
        await wait_for(lambda: _empty(env.queue.dead_letters()), timeout=15)


async def test_tick_keys_live_about_one_cron_interval(env: Env) -> None:
    """`*/15` cron: a tick is remembered 15 minutes plus a minute, not two days."""
    user = f"ok-{uuid.uuid4().hex[:8]}"
    tick = int(datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp())
    assert await env.queue.enqueue_tick(Job(PROVIDER, user), tick, 0.0) == "enqueued"
    assert await env.queue.enqueue_tick(Job(PROVIDER, user), tick, 0.0) == "duplicate"
    if env.redis is not None:
        ttl = await env.redis.ttl(Keys(env.settings.redis_namespace).tick(PROVIDER, user, tick))
    else:
        assert isinstance(env.queue, LocalJobQueue)
        [until] = env.queue._ticks.values()
        ttl = round(until - time.time())
    assert 900 <= ttl <= 900 + 61, ttl


async def test_dlq_retry_all_reads_the_dead_letter_stream_in_chunks(
    namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(redis_url=redis_url, redis_namespace=namespace)
    queue = RedisJobQueue(settings)
    keys = Keys(namespace)
    total = 2 * DEAD_LETTER_CHUNK + 7
    async with queue.redis.pipeline(transaction=False) as pipe:
        for i in range(total):
            payload = f'{{"userId": "u{i}"}}'
            pipe.xadd(keys.dead, {"type": "github:fetch", "payload": payload, "error": "x"})
        await pipe.execute()
    reads: list[Any] = []
    xrange = queue.redis.xrange

    async def counting_xrange(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("count"))
        return await xrange(*args, **kwargs)

    monkeypatch.setattr(queue.redis, "xrange", counting_xrange)
    try:
        assert await queue.retry_dead(None) == total
        assert len(reads) >= 3  # 207 entries: three chunks (and an empty read)
        assert all(count == DEAD_LETTER_CHUNK for count in reads)
        assert await queue.redis.xlen(keys.dead) == 0
        assert await queue.redis.xlen(keys.stream) == total
    finally:
        await queue.redis.delete(*await queue.redis.keys(f"{namespace}:*"))
        await queue.aclose()


async def _at_least(value: Any, minimum: int) -> bool:
    return bool(await value >= minimum)


async def _empty(value: Any) -> bool:
    return not await value
