"""The in-process queue (embedded mode) and the queue commands of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from ingestion.config import Settings
from ingestion.providers import registry
from ingestion.queue import Keys, LocalJobQueue, RedisJobQueue, queue_stats_for
from ingestion.queue.jobs import Job, JobOptions
from ingestion.scheduler import Scheduler
from ingestion.services import Services
from ingestion.storage.state import SyncStateStore
from tests.conftest import run_cli
from tests.queue_helpers import add_accounts, running_worker, wait_for
from tests.queue_scripted_provider import PROVIDER, ScriptedProvider


@pytest.fixture
async def local(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Services, LocalJobQueue]]:
    monkeypatch.setitem(registry._overrides, PROVIDER, ScriptedProvider)
    settings = Settings(
        database_url=sqlite_url,
        job_retry_base_seconds=0.02,
        job_retry_max_seconds=0.05,
        job_max_attempts=2,
        schedule_jitter_seconds=0,
    )
    queue = LocalJobQueue()
    services = await Services.open(settings, lock=queue.sync_lock())
    yield services, queue
    await services.aclose()


async def test_in_process_queue_retries_dead_letters_and_coalesces(
    local: tuple[Services, LocalJobQueue],
) -> None:
    services, queue = local
    await add_accounts(services, ["ok-1", "flaky-1", "poison-1"])
    first = await queue.enqueue(Job(PROVIDER, "ok-1"))
    assert (await queue.enqueue(Job(PROVIDER, "ok-1", JobOptions(max_results=5)))).coalesced
    await queue.enqueue(Job(PROVIDER, "flaky-1"))
    await queue.enqueue(Job(PROVIDER, "poison-1"))
    store = SyncStateStore(services.db)

    async def ok_runs() -> list[str]:
        return sorted(r.user_id for r in await store.recent_runs(50) if r.status == "ok")

    async with running_worker(services.settings, queue, services):
        await wait_for(lambda: _is(ok_runs, ["flaky-1", "ok-1"]))
        await wait_for(queue.dead_letters)
        [dead] = await queue.dead_letters()
        assert dead.error == "failed after 2 attempts: upstream keeps answering 503"
        assert dead.attempts == 2
        # The pair is free again once its job finished; a dead job can be retried.
        assert not (await queue.enqueue(Job(PROVIDER, "ok-1"))).coalesced
        assert await queue.retry_dead(None) == 1
        await wait_for(queue.dead_letters)
    stats = await queue.stats()
    assert stats["kind"] == "in-process"
    assert stats["pending"] == 0
    assert stats["deadLetters"] == 1
    assert await queue.purge_dead() == 1
    assert first.job_id in {r.job_id for r in await store.recent_runs(50)}


async def test_in_process_scheduler_tick(local: tuple[Services, LocalJobQueue]) -> None:
    services, queue = local
    await add_accounts(services, ["ok-1", "ok-2"])
    scheduler = Scheduler(services.settings, queue, services.db, providers=[PROVIDER])
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    assert (await scheduler.enqueue_tick(PROVIDER, tick)).outcomes == {"enqueued": 2}
    assert (await scheduler.enqueue_tick(PROVIDER, tick)).outcomes == {"duplicate": 2}
    assert (await queue.stats())["waiting"] == 2


async def _is(check: Callable[[], Awaitable[object]], expected: object) -> bool:
    return await check() == expected


@pytest.mark.timeout(300)
async def test_enqueue_status_and_dlq_commands(
    namespace: str,
    redis_url: str,
    sqlite_url: str,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry._overrides, PROVIDER, ScriptedProvider)
    env = {**base_env, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace}
    keys = Keys(namespace)
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        result = run_cli("enqueue", "github", "--user", "ok-1", "--full", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("enqueued job ")
        [(_, fields)] = await redis.xrange(keys.stream)
        assert fields["type"] == "github:fetch"
        assert json.loads(fields["payload"]) == {
            "userId": "ok-1",
            "options": {"forceFullSync": True},
        }
        # A job that failed for good, dead-lettered with its error.
        dead_id = await redis.xadd(
            keys.dead,
            {
                "type": "github:fetch",
                "payload": '{"userId":"ok-2","options":{}}',
                "error": "failed after 5 attempts: 503",
                "failedAt": "2026-01-01T00:00:00Z",
                "attempts": "5",
            },
        )
        # What `status` shows for the queue.
        stats = queue_stats_for(Settings(redis_url=redis_url, redis_namespace=namespace))
        assert stats is not None
        figures = await stats()
        assert figures["kind"] == "redis"
        assert figures["length"] == 1
        assert figures["waiting"] == 1
        assert figures["deadLetters"] == 1

        result = run_cli("dlq", "list", "--json", env=env)
        assert result.returncode == 0, result.stderr
        [row] = json.loads(result.stdout)
        assert row["id"] == dead_id
        assert row["error"] == "failed after 5 attempts: 503"
        assert row["attempts"] == 5
        assert row["count"] == 1

        result = run_cli("dlq", "retry", dead_id, env=env)
        assert result.returncode == 0, result.stderr
        assert "requeued 1" in result.stdout
        assert await redis.xlen(keys.dead) == 0

        # The retried job (and the enqueued one) complete on a worker.
        settings = Settings(redis_url=redis_url, redis_namespace=namespace, database_url=sqlite_url)
        queue = RedisJobQueue(settings)
        consumer = queue.consumer()
        services = await Services.open(settings, lock=consumer.sync_lock())
        try:
            await add_accounts(services, ["ok-1", "ok-2"])
            store = SyncStateStore(services.db)

            async def both_done() -> bool:
                runs = await store.recent_runs(10)
                return sorted(r.user_id for r in runs if r.status == "ok") == ["ok-1", "ok-2"]

            async with running_worker(settings, consumer, services):
                await wait_for(both_done)
        finally:
            await services.aclose()
            await queue.aclose()
    finally:
        await redis.aclose()


def test_queue_commands_need_redis(base_env: dict[str, str]) -> None:
    result = run_cli("dlq", "retry", "--all", env=base_env)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: REDIS_URL is not set: the job queue lives in Redis"


def test_the_queue_imports_no_provider_module() -> None:
    """The queue has its own job options type; providers' `FetchOptions` is the worker's
    business (`ingestion.worker.fetch_options`). Checked in a fresh interpreter."""
    code = (
        "import sys, ingestion.queue, ingestion.queue.jobs, ingestion.queue.local, "
        "ingestion.queue.redis_streams, ingestion.queue.base, ingestion.queue.locks\n"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('ingestion.providers', 'ingestion.sync', 'ingestion.status'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
