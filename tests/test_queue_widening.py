"""A forced full sync is never lost to coalescing, on the Redis queue and the in-process queue.

The scripted `slow-…` user keeps its cursor as `{"page": n}`: after a complete sync an
incremental run fetches nothing, a full run fetches every page again. So a run's `fetched`
tells whether it ran as a full sync.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from ingestion.config import Settings
from ingestion.providers import registry
from ingestion.queue import Keys, LocalJobQueue, RedisJobQueue
from ingestion.queue.base import Consumer
from ingestion.queue.jobs import Job, JobOptions
from ingestion.services import Services
from ingestion.storage.state import RunView, SyncStateStore
from tests.conftest import run_cli
from tests.queue_helpers import add_accounts, running_worker, wait_for
from tests.queue_scripted_provider import PROVIDER, ScriptedProvider

PAGES = 3
FULL = JobOptions(force_full_sync=True)


@dataclass
class Env:
    kind: str
    settings: Settings
    queue: RedisJobQueue | LocalJobQueue
    consumer: Consumer
    services: Services

    async def ok_runs(self, user: str) -> list[RunView]:
        runs = await SyncStateStore(self.services.db).recent_runs(100)
        return sorted(
            (r for r in runs if r.user_id == user and r.status == "ok"), key=lambda r: r.id
        )

    async def wait_ok_runs(self, user: str, n: int) -> list[RunView]:
        async def enough() -> list[RunView] | None:
            runs = await self.ok_runs(user)
            return runs if len(runs) >= n else None

        runs: list[RunView] = await wait_for(enough, timeout=30)
        return runs

    async def running(self, user: str) -> bool:
        runs = await SyncStateStore(self.services.db).recent_runs(100)
        return any(r.user_id == user and r.status == "running" for r in runs)


@pytest.fixture(params=["redis", "in-process"])
async def env(
    request: pytest.FixtureRequest,
    namespace: str,
    redis_url: str,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Env]:
    monkeypatch.setitem(registry._overrides, PROVIDER, ScriptedProvider)
    monkeypatch.setenv("QUEUE_TEST_PAGES", str(PAGES))
    monkeypatch.setenv("QUEUE_TEST_PAGE_SECONDS", "0.25")
    redis = request.param == "redis"
    settings = Settings(
        redis_url=redis_url if redis else None,
        redis_namespace=namespace,
        database_url=sqlite_url,
        job_visibility_timeout=5,
        shutdown_grace_period=5,
        worker_concurrency=2,
    )
    queue: RedisJobQueue | LocalJobQueue
    consumer: Consumer
    if redis:
        queue = RedisJobQueue(settings)
        consumer = queue.consumer()
        await consumer.start()
    else:
        queue = consumer = LocalJobQueue()
    services = await Services.open(settings, lock=consumer.sync_lock())
    try:
        yield Env(request.param, settings, queue, consumer, services)
    finally:
        await services.aclose()
        await queue.aclose()


async def _synced_once(env: Env, user: str) -> None:
    """A complete first sync: the cursor now stands after the last page."""
    await add_accounts(env.services, [user])
    await env.queue.enqueue(Job(PROVIDER, user))
    async with running_worker(env.settings, env.consumer, env.services):
        [run] = await env.wait_ok_runs(user, 1)
    assert run.fetched == 2 * PAGES


async def test_full_sync_coalesced_into_a_queued_job_makes_it_a_full_sync(env: Env) -> None:
    user = "slow-queued"
    await _synced_once(env, user)
    queued = await env.queue.enqueue(Job(PROVIDER, user))
    forced = await env.queue.enqueue(Job(PROVIDER, user, FULL))
    assert forced.coalesced
    assert forced.job_id == queued.job_id
    assert forced.widening == "merged"
    async with running_worker(env.settings, env.consumer, env.services):
        runs = await env.wait_ok_runs(user, 2)
        # Once it finished, the pair is free: no follow-up job was queued.
        await wait_for(lambda: _free(env, user))
    assert runs[1].job_id == queued.job_id
    assert runs[1].fetched == 2 * PAGES  # a full sync; an incremental one fetches 0
    assert len(await env.ok_runs(user)) == 2


async def test_full_sync_requested_while_a_job_runs_follows_it(env: Env) -> None:
    user = "slow-running"
    await add_accounts(env.services, [user])
    first = await env.queue.enqueue(Job(PROVIDER, user))
    async with running_worker(env.settings, env.consumer, env.services):
        await wait_for(lambda: env.running(user))
        forced = await env.queue.enqueue(Job(PROVIDER, user, FULL))
        assert forced.coalesced
        assert forced.job_id == first.job_id
        assert forced.widening == "follow-up"
        # A second request for the same thing adds nothing more.
        again = await env.queue.enqueue(Job(PROVIDER, user, FULL))
        assert again.widening == "follow-up"
        runs = await env.wait_ok_runs(user, 2)
        await wait_for(lambda: _free(env, user))
    assert runs[0].job_id == first.job_id
    assert runs[1].job_id not in {first.job_id, None}
    # The first run left the cursor after the last page: only a full sync fetches again.
    assert runs[1].fetched == 2 * PAGES
    assert len(await env.ok_runs(user)) == 2


async def test_full_sync_requested_while_a_full_sync_runs_is_covered(env: Env) -> None:
    user = "slow-covered"
    await add_accounts(env.services, [user])
    first = await env.queue.enqueue(Job(PROVIDER, user, FULL))
    async with running_worker(env.settings, env.consumer, env.services):
        await wait_for(lambda: env.running(user))
        again = await env.queue.enqueue(Job(PROVIDER, user, FULL))
        assert again.coalesced
        assert again.widening == "covered"
        plain = await env.queue.enqueue(Job(PROVIDER, user))
        assert plain.coalesced
        assert plain.widening is None
        await env.wait_ok_runs(user, 1)
        await wait_for(lambda: _free(env, user))
    assert [r.job_id for r in await env.ok_runs(user)] == [first.job_id]


async def test_taken_full_sync_survives_a_retry_and_a_dead_letter(env: Env) -> None:
    queue, consumer, user = env.queue, env.consumer, "u-2"
    await queue.enqueue(Job(PROVIDER, user))
    assert (await queue.enqueue(Job(PROVIDER, user, FULL))).widening == "merged"
    [delivery] = await consumer.fetch(1, 1.0)
    assert delivery.job is not None
    started = await consumer.begin(delivery, delivery.job)
    assert started.options.force_full_sync

    # A retry carries it in its own fields and takes it again.
    await consumer.reschedule(delivery, started, None)
    [retry] = await consumer.fetch(1, 1.0)
    assert retry.job is not None
    assert retry.job.options.force_full_sync
    assert (await consumer.begin(retry, retry.job)).options.force_full_sync

    # It dies: the full sync is still owed, and the pair's next job runs as one.
    await consumer.dead_letter(retry, "gave up", 3)
    assert not (await queue.enqueue(Job(PROVIDER, user))).coalesced
    [following] = await consumer.fetch(1, 1.0)
    assert following.job is not None
    assert not following.job.options.force_full_sync
    assert (await consumer.begin(following, following.job)).options.force_full_sync
    await consumer.complete(following)

    # Once a run with it completed, it is no longer owed.
    assert not (await queue.enqueue(Job(PROVIDER, user))).coalesced
    [plain] = await consumer.fetch(1, 1.0)
    assert plain.job is not None
    assert not (await consumer.begin(plain, plain.job)).options.force_full_sync
    await consumer.complete(plain)


async def _free(env: Env, user: str) -> bool:
    """No job queued, delayed or running for the pair (its coalescing marker is gone)."""
    if isinstance(env.queue, RedisJobQueue):
        keys = env.queue.keys
        found = await env.queue.redis.exists(
            keys.active(PROVIDER, user), keys.widen(PROVIDER, user), keys.running(PROVIDER, user)
        )
        return found == 0 and (await env.queue.stats())["delayed"] == 0
    stats = await env.queue.stats()
    return stats["length"] == 0 and stats["delayed"] == 0


# --- Redis: the widening survives a retry and a crash; the CLI says what happened --------------


@pytest.fixture
async def redis_queue(
    namespace: str, redis_url: str, sqlite_url: str
) -> AsyncIterator[tuple[RedisJobQueue, Redis]]:
    settings = Settings(redis_url=redis_url, redis_namespace=namespace, database_url=sqlite_url)
    queue = RedisJobQueue(settings)
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield queue, redis
    finally:
        await queue.aclose()
        await redis.aclose()


async def test_taken_full_sync_survives_a_retry_and_a_crashed_worker(
    redis_queue: tuple[RedisJobQueue, Redis],
) -> None:
    queue, redis = redis_queue
    keys: Keys = queue.keys
    first = queue.consumer()
    await first.start()
    await queue.enqueue(Job(PROVIDER, "u-1"))
    assert (await queue.enqueue(Job(PROVIDER, "u-1", FULL))).widening == "merged"

    [delivery] = await first.fetch(1, 1.0)
    assert delivery.job is not None
    assert not delivery.job.options.force_full_sync
    started = await first.begin(delivery, delivery.job)
    assert started.options.force_full_sync
    assert await redis.exists(keys.widen(PROVIDER, "u-1")) == 0

    # The worker dies: another one reclaims the entry, whose fields predate the widening.
    second = queue.consumer()
    again = await second.begin(delivery, delivery.job)
    assert again.options.force_full_sync

    # A retry carries the widened options in its own fields.
    await second.reschedule(delivery, started, None)
    assert await redis.exists(keys.running(PROVIDER, "u-1")) == 0
    [retry] = await second.fetch(1, 1.0)
    assert retry.job is not None
    assert retry.job.options.force_full_sync
    assert retry.job.job_id == delivery.job_id


def test_enqueue_full_on_the_command_line_reports_the_merge(
    base_env: dict[str, str], redis_url: str, namespace: str
) -> None:
    env = {**base_env, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace}
    plain = run_cli("enqueue", "github", "--user", "cli-1", env=env)
    assert plain.returncode == 0, plain.stderr
    job_id = plain.stdout.split()[-1]
    full = run_cli("enqueue", "github", "--user", "cli-1", "--full", env=env)
    assert full.returncode == 0, full.stderr
    assert full.stdout.strip() == (
        f"coalesced into queued job {job_id}; it will run as a full sync"
    )


async def test_a_rerun_request_while_a_job_runs_is_followed_by_one_plain_run(env: Env) -> None:
    """A push notification (`rerun`) for a pair whose job already read may report a change
    that job did not see: it is followed by one more plain run, never swallowed."""
    user = "slow-rerun"
    await add_accounts(env.services, [user])
    first = await env.queue.enqueue(Job(PROVIDER, user))
    merged = await env.queue.enqueue(Job(PROVIDER, user), rerun=True)
    assert (merged.coalesced, merged.widening) == (True, "merged")  # not started: it covers it
    async with running_worker(env.settings, env.consumer, env.services):
        await wait_for(lambda: env.running(user))
        again = await env.queue.enqueue(Job(PROVIDER, user), rerun=True)
        assert (again.coalesced, again.widening) == (True, "follow-up")
        twice = await env.queue.enqueue(Job(PROVIDER, user), rerun=True)
        assert twice.widening == "follow-up"  # still one follow-up
        runs = await env.wait_ok_runs(user, 2)
        await wait_for(lambda: _free(env, user))
    assert runs[0].job_id == first.job_id
    assert runs[1].job_id not in {first.job_id, None}
    assert runs[1].fetched == 0  # a plain incremental run, not a full sync
    assert len(await env.ok_runs(user)) == 2
