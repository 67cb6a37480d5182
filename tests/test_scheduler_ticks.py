"""The scheduler: who is due on a tick, exactly-once per tick, jitter, and three real
`ingestion scheduler` processes on the same ticks."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ingestion.config import Settings
from ingestion.queue import Keys, LocalJobQueue, RedisJobQueue
from ingestion.scheduler import Scheduler
from ingestion.services import Services
from ingestion.storage.accounts import find_account, fingerprint, save_account
from ingestion.storage.db import upgrade
from ingestion.storage.models import Account
from ingestion.storage.state import SyncStateStore
from tests.queue_helpers import add_accounts, log_lines, queue_env, spawn, stop_process, wait_for

TICK = datetime(2026, 11, 28, 12, 15, tzinfo=UTC)


@pytest.fixture
async def services(sqlite_url: str) -> AsyncIterator[Services]:
    services = await Services.open(Settings(database_url=sqlite_url))
    yield services
    await services.aclose()


async def test_reauth_required_accounts_are_skipped_until_reconnected(services: Services) -> None:
    await add_accounts(services, ["u1", "u2"])
    store = SyncStateStore(services.db)
    run_id = await store.begin("u2", "github", None)
    async with services.db.session() as session:
        account = await find_account(session, "u2", "github")
        assert account is not None
        stale = fingerprint(account)
    await store.finish("u2", "github", run_id, "reauth_required", error="x", fingerprint=stale)
    scheduler = Scheduler(services.settings, LocalJobQueue(), services.db, providers=["github"])

    assert await scheduler.due_users("github") == ["u1"]
    assert await scheduler.due_users("gmail") == []  # no Google accounts
    # The person reconnects: new tokens, new fingerprint, scheduled again.
    async with services.db.session() as session:
        await save_account(session, user_id="u2", provider_id="github", access_token="fresh")
    assert await scheduler.due_users("github") == ["u1", "u2"]


async def test_one_job_per_pair_per_tick_across_schedulers(
    services: Services, namespace: str, redis_url: str
) -> None:
    await add_accounts(services, ["u1", "u2"])
    settings = Settings(redis_url=redis_url, redis_namespace=namespace, schedule_jitter_seconds=0)
    queues = [RedisJobQueue(settings) for _ in range(3)]
    try:
        schedulers = [Scheduler(settings, q, services.db, providers=["github"]) for q in queues]
        reports = await asyncio.gather(*(s.enqueue_tick("github", TICK) for s in schedulers))
        outcomes: dict[str, int] = defaultdict(int)
        for report in reports:
            for outcome, n in report.outcomes.items():
                outcomes[outcome] += n
        assert outcomes == {"enqueued": 2, "duplicate": 4}
        redis = queues[0].redis
        entries = await redis.xrange(Keys(namespace).stream)
        assert sorted(json.loads(f["payload"])["userId"] for _, f in entries) == ["u1", "u2"]
        assert {f["scheduledFor"] for _, f in entries} == {str(int(TICK.timestamp()))}
        # The same tick again changes nothing; the next tick finds the jobs still queued.
        again = await schedulers[0].enqueue_tick("github", TICK)
        assert again.outcomes == {"duplicate": 2}
        later = await schedulers[0].enqueue_tick("github", TICK.replace(minute=30))
        assert later.outcomes == {"coalesced": 2}
    finally:
        for queue in queues:
            await queue.aclose()


async def test_jitter_spreads_jobs_through_the_delayed_set(
    services: Services, namespace: str, redis_url: str
) -> None:
    await add_accounts(services, [f"u{i}" for i in range(5)])
    settings = Settings(redis_url=redis_url, redis_namespace=namespace, schedule_jitter_seconds=60)
    queue = RedisJobQueue(settings)
    try:
        await Scheduler(settings, queue, services.db, providers=["github"]).enqueue_tick(
            "github", TICK
        )
        keys = Keys(namespace)
        assert await queue.redis.xlen(keys.stream) == 0
        scores = [s for _, s in await queue.redis.zrange(keys.delayed, 0, -1, withscores=True)]
        assert len(scores) == 5
        assert max(scores) - min(scores) < 60
    finally:
        await queue.aclose()


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_three_scheduler_processes_enqueue_each_pair_once_per_tick(
    namespace: str, redis_url: str, sqlite_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(database_url=sqlite_url)
    await asyncio.to_thread(upgrade, settings)
    services = await Services.open(settings, migrate=False)
    users = ["u1", "u2", "u3"]
    await add_accounts(services, users)
    await services.aclose()
    env = queue_env(
        base_env,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=namespace,
        DATABASE_URL=sqlite_url,
        GITHUB_SYNC_CRON="* * * * * */2",  # every two seconds
        SCHEDULE_JITTER_SECONDS="0",
    )
    logs = [tmp_path / f"scheduler-{i}.log" for i in range(3)]
    procs = [spawn(["scheduler"], env, log) for log in logs]
    try:

        def ticks_seen_by_all() -> bool:
            seen = [
                {e["tick"] for e in log_lines(log) if e.get("event") == "schedule tick"}
                for log in logs
            ]
            return bool(set.intersection(*seen))

        await wait_for(lambda: asyncio.to_thread(ticks_seen_by_all), timeout=150, interval=0.2)
    finally:
        codes = [stop_process(p, signal.SIGTERM) for p in procs]
    assert codes == [0, 0, 0]

    per_tick: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for log in logs:
        for e in log_lines(log):
            if e.get("event") == "schedule tick" and e.get("provider") == "github":
                for outcome in ("enqueued", "coalesced", "duplicate"):
                    per_tick[e["tick"]][outcome] += e[outcome]
    shared = [t for t, c in per_tick.items() if c["duplicate"] == 2 * len(users)]
    assert shared, per_tick  # at least one tick handled by all three processes
    for counts in per_tick.values():
        # Exactly one enqueue (or merge into the queued job) per user and tick.
        assert counts["enqueued"] + counts["coalesced"] == len(users), per_tick
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: list[Any] = await redis.xrange(Keys(namespace).stream)
    finally:
        await redis.aclose()
    assert sorted(json.loads(f["payload"])["userId"] for _, f in entries) == users


async def test_a_tick_walks_the_accounts_in_keyset_pages(
    services: Services, namespace: str, redis_url: str
) -> None:
    """Pages of 2 accounts: every due user once, a user with two accounts judged by the most
    recently updated one (even when they straddle a page), a user waiting on a reconnect left
    out; one queue call per page."""
    users = [f"u{i}" for i in range(7)]
    await add_accounts(services, users)
    async with services.db.session() as session:
        # u3 also has an older account whose tokens were the ones that failed.
        session.add(
            Account(
                id="old-u3",
                account_id="u3-old",
                provider_id="github",
                user_id="u3",
                access_token="old-token",
                created_at=TICK - timedelta(days=30),
                updated_at=TICK - timedelta(days=30),
            )
        )
    store = SyncStateStore(services.db)
    async with services.db.session() as session:
        old = await session.get(Account, "old-u3")
        current = await find_account(session, "u5", "github")
        assert old is not None
        assert current is not None
        prints = {"u3": fingerprint(old), "u5": fingerprint(current)}
    for user, stale in prints.items():
        run_id = await store.begin(user, "github", None)
        await store.finish(user, "github", run_id, "reauth_required", error="x", fingerprint=stale)
    settings = Settings(redis_url=redis_url, redis_namespace=namespace, schedule_jitter_seconds=0)
    queue = RedisJobQueue(settings)
    calls: list[int] = []
    enqueue_ticks = queue.enqueue_ticks

    async def counted(jobs: Any, tick_epoch: int) -> list[str]:
        calls.append(len(jobs))
        return await enqueue_ticks(jobs, tick_epoch)

    queue.enqueue_ticks = counted  # type: ignore[method-assign]
    try:
        scheduler = Scheduler(settings, queue, services.db, providers=["github"])
        scheduler.page_size = 2
        due = ["u0", "u1", "u2", "u3", "u4", "u6"]  # u3 reconnected since; u5 did not
        assert await scheduler.due_users("github") == due
        report = await scheduler.enqueue_tick("github", TICK)
        assert report.outcomes == {"enqueued": 6}
        assert sum(calls) == 6
        assert len(calls) >= 3  # one call per page, never one per job
        entries = await queue.redis.xrange(Keys(namespace).stream)
        assert sorted(json.loads(f["payload"])["userId"] for _, f in entries) == due
    finally:
        await queue.aclose()
