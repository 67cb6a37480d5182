"""The worker against a real Redis, in this process: retries, dead letters, malformed entries,
deferrals, re-authentication, coalescing, deleted pending entries and trimming."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select
from structlog.testing import capture_logs

from ingestion.config import Settings
from ingestion.providers import registry
from ingestion.queue import Keys, RedisJobQueue
from ingestion.queue.jobs import Job, JobOptions
from ingestion.queue.redis_streams import RedisConsumer, _run_scripts
from ingestion.services import Services
from ingestion.storage.models import MemoryRow
from ingestion.storage.state import SyncStateStore
from ingestion.worker import Worker, engine_runner
from tests.queue_helpers import add_accounts, running_worker, wait_for
from tests.queue_scripted_provider import PROVIDER, ScriptedProvider


@dataclass
class Env:
    settings: Settings
    queue: RedisJobQueue
    consumer: RedisConsumer
    services: Services
    redis: Redis
    keys: Keys

    async def dead(self) -> list[tuple[str, dict[str, str]]]:
        return [(i, dict(f)) for i, f in await self.redis.xrange(self.keys.dead)]

    async def pending(self) -> int:
        summary: Any = await self.redis.xpending(self.keys.stream, self.keys.group)
        return int(summary["pending"])

    async def runs(self, status: str) -> list[Any]:
        runs = await SyncStateStore(self.services.db).recent_runs(500)
        return [r for r in runs if r.status == status]


@pytest.fixture
async def env(
    namespace: str, redis_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Env]:
    monkeypatch.setitem(registry._overrides, PROVIDER, ScriptedProvider)
    settings = Settings(
        redis_url=redis_url,
        redis_namespace=namespace,
        database_url=sqlite_url,
        job_retry_base_seconds=0.02,
        job_retry_max_seconds=0.1,
        job_max_attempts=3,
        job_max_deferrals=2,
        job_visibility_timeout=1,
        shutdown_grace_period=5,
        worker_concurrency=4,
    )
    queue = RedisJobQueue(settings)
    consumer = queue.consumer()
    await consumer.start()
    services = await Services.open(settings, lock=consumer.sync_lock())
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield Env(settings, queue, consumer, services, redis, Keys(namespace))
    finally:
        await services.aclose()
        await queue.aclose()
        await redis.aclose()


async def test_poison_job_is_dead_lettered_after_max_attempts_while_others_flow(env: Env) -> None:
    users = ["poison-1", *[f"ok-{i}" for i in range(6)]]
    await add_accounts(env.services, users)
    for user in users:
        assert not (await env.queue.enqueue(Job(PROVIDER, user))).coalesced

    async with running_worker(env.settings, env.consumer, env.services):

        async def settled() -> bool:
            return len(await env.dead()) == 1 and len(await env.runs("ok")) == 6

        await wait_for(settled)

    [(_, dead)] = await env.dead()
    assert dead["type"] == "github:fetch"
    assert json.loads(dead["payload"])["userId"] == "poison-1"
    assert dead["error"] == "failed after 3 attempts: upstream keeps answering 503"
    assert dead["attempts"] == "3"
    assert dead["failedAt"].endswith("Z")
    assert len(await env.runs("error")) == 3  # tried exactly N times
    assert await env.pending() == 0
    assert await env.redis.zcard(env.keys.delayed) == 0
    assert await env.redis.exists(env.keys.active(PROVIDER, "poison-1")) == 0


MALFORMED: list[tuple[dict[str, str], str]] = [
    ({"payload": '{"userId": "u"}'}, "entry has no 'type' field"),
    ({"type": "myspace:fetch", "payload": '{"userId": "u"}'}, "unknown job type 'myspace:fetch'"),
    ({"type": "github:fetch"}, "entry has no 'payload' field"),
    ({"type": "github:fetch", "payload": "{not json"}, "payload is not valid JSON"),
    ({"type": "github:fetch", "payload": '{"options": {}}'}, "payload has no 'userId'"),
    (
        {"type": "github:fetch", "payload": '{"userId": "u", "options": {"maxResults": "ten"}}'},
        "options.maxResults must be a positive integer",
    ),
    (
        {"type": "github:fetch", "payload": '{"userId": "u", "options": {"forceFullSync": 1}}'},
        "options.forceFullSync must be true or false",
    ),
    (
        {"type": "github:fetch", "payload": '{"userId": "u", "options": {"since": "yesterday"}}'},
        "options.since is not ISO-8601",
    ),
]


async def test_each_malformed_entry_is_dead_lettered_with_its_error(env: Env) -> None:
    await add_accounts(env.services, ["ok-after"])
    for fields, _ in MALFORMED:
        await env.redis.xadd(env.keys.stream, fields)  # type: ignore[arg-type]
    # An entry with only the two contract fields is a valid job.
    await env.redis.xadd(
        env.keys.stream, {"type": "github:fetch", "payload": '{"userId": "ok-after"}'}
    )

    async with running_worker(env.settings, env.consumer, env.services):

        async def settled() -> bool:
            return len(await env.dead()) == len(MALFORMED) and len(await env.runs("ok")) == 1

        await wait_for(settled)

    dead = [fields for _, fields in await env.dead()]
    for original, error in MALFORMED:
        [fields] = [f for f in dead if _without_dead_fields(f) == original]
        assert fields["error"].startswith(error), fields["error"]
        assert fields["attempts"] == "0"
    assert await env.pending() == 0


def _without_dead_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in ("error", "failedAt", "attempts", "count")}


async def test_permanent_reauth_and_rate_limited_jobs(env: Env) -> None:
    await add_accounts(env.services, ["permanent-1", "reauth-1", "limited-1"])
    for user in ("permanent-1", "reauth-1", "limited-1"):
        await env.queue.enqueue(Job(PROVIDER, user))
    # A user without a connected account fails permanently, not retried.
    await env.queue.enqueue(Job(PROVIDER, "nobody"))

    async with running_worker(env.settings, env.consumer, env.services):

        async def settled() -> bool:
            return len(await env.dead()) == 3 and await env.pending() == 0

        await wait_for(settled)

    errors = {json.loads(f["payload"])["userId"]: f for _, f in await env.dead()}
    assert errors["permanent-1"]["error"] == "repository was deleted"
    assert errors["permanent-1"]["attempts"] == "1"
    assert "has no connected github account" in errors["nobody"]["error"]
    # Rate limits are deferrals, not failed attempts, and they are bounded.
    assert errors["limited-1"]["error"] == "deferred 2 times; last: rate window exhausted"
    assert errors["limited-1"]["attempts"] == "1"
    state = await SyncStateStore(env.services.db).load("reauth-1", PROVIDER)
    assert state.status == "reauth_required"
    assert "reauth-1" not in errors


@pytest.mark.parametrize("round_", [1, 2])
async def test_flaky_job_retries_and_succeeds(env: Env, round_: int) -> None:
    """Run twice with the same user in one process: each test starts from a first try."""
    await add_accounts(env.services, ["flaky-redis"])
    await env.queue.enqueue(Job(PROVIDER, "flaky-redis"))
    async with running_worker(env.settings, env.consumer, env.services):
        await wait_for(lambda: env.runs("ok"))
    assert len(await env.runs("error")) == 1
    assert await env.dead() == []
    assert await env.pending() == 0


async def test_second_job_for_a_queued_or_running_pair_is_coalesced(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_TEST_PAGES", "2")
    monkeypatch.setenv("QUEUE_TEST_PAGE_SECONDS", "0.3")
    await add_accounts(env.services, ["slow-1"])
    coalesced = REGISTRY.get_sample_value(
        "ingestion_jobs_total", {"provider": PROVIDER, "outcome": "coalesced"}
    )
    first = await env.queue.enqueue(Job(PROVIDER, "slow-1"))
    second = await env.queue.enqueue(Job(PROVIDER, "slow-1", JobOptions(force_full_sync=True)))
    assert (
        REGISTRY.get_sample_value(
            "ingestion_jobs_total", {"provider": PROVIDER, "outcome": "coalesced"}
        )
        == (coalesced or 0) + 1
    )
    assert not first.coalesced
    assert second.coalesced
    assert second.job_id == first.job_id
    assert await env.redis.xlen(env.keys.stream) == 1

    async with running_worker(env.settings, env.consumer, env.services):
        await wait_for(lambda: env.runs("running"))
        assert (await env.queue.enqueue(Job(PROVIDER, "slow-1"))).coalesced
        await wait_for(lambda: env.runs("ok"), timeout=30)
        # Once it finished, the pair can be enqueued again.
        third = await env.queue.enqueue(Job(PROVIDER, "slow-1"))
        assert not third.coalesced
        await wait_for(lambda: _count(env.runs("ok"), 2), timeout=30)

    runs = await SyncStateStore(env.services.db).recent_runs(10)
    assert sorted(r.job_id or "" for r in runs) == sorted([first.job_id, third.job_id])


async def _count(runs: Any, n: int) -> bool:
    return len(await runs) == n


async def test_deleted_pending_entry_is_acknowledged_not_crashed_on(env: Env) -> None:
    await add_accounts(env.services, ["ok-1", "ok-2"])
    await env.queue.enqueue(Job(PROVIDER, "ok-1"))
    # A consumer that died holding the entry, which was then deleted from the stream.
    [[_, [(entry_id, _)]]] = await env.redis.xreadgroup(
        env.keys.group, "dead-consumer", {env.keys.stream: ">"}, count=1
    )
    await env.redis.xdel(env.keys.stream, entry_id)
    await env.queue.enqueue(Job(PROVIDER, "ok-2"))

    with capture_logs() as logs:
        async with running_worker(env.settings, env.consumer, env.services):

            async def settled() -> bool:
                return await env.pending() == 0 and len(await env.runs("ok")) == 1

            await wait_for(settled)
            await wait_for(
                lambda: _logged(logs, "pending entries were deleted before they ran"), timeout=10
            )
    assert await env.dead() == []
    [gone] = [e for e in logs if e["event"] == "pending entries were deleted before they ran"]
    assert gone["entries"] == [entry_id]
    # Reclaiming went smoothly: the worker never took the queue for unreachable.
    assert not [e for e in logs if e["event"] == "queue unreachable; retrying"]


async def _logged(logs: list[dict[str, Any]], event: str) -> bool:
    return any(e["event"] == event for e in logs)


async def test_trim_keeps_pending_and_undelivered_entries(env: Env) -> None:
    for i in range(5):
        await env.redis.xadd(env.keys.stream, {"type": "github:fetch", "payload": f"{i}"})
    response: Any = await env.redis.xreadgroup(
        env.keys.group, "c1", {env.keys.stream: ">"}, count=3
    )
    ids = [entry_id for entry_id, _ in response[0][1]]
    await env.redis.xack(env.keys.stream, env.keys.group, ids[0], ids[2])
    await env.consumer.trim()
    remaining = [entry_id for entry_id, _ in await env.redis.xrange(env.keys.stream)]
    assert remaining[0] == ids[1]  # the oldest pending entry stays, and all after it
    assert len(remaining) == 4
    await env.redis.xack(env.keys.stream, env.keys.group, ids[1])
    await env.consumer.trim()
    assert await env.redis.xlen(env.keys.stream) == 2  # the two never delivered


async def test_queue_figures_for_status(env: Env) -> None:
    await env.queue.enqueue(Job(PROVIDER, "ok-1"))
    await env.redis.xadd(env.keys.dead, {"type": "github:fetch", "error": "x"})
    await env.redis.xreadgroup(env.keys.group, "c1", {env.keys.stream: ">"}, count=1)
    stats = await env.queue.stats()
    assert stats["kind"] == "redis"
    assert stats["length"] == 1
    assert stats["pending"] == 1
    assert stats["deadLetters"] == 1
    assert stats["oldestPendingSeconds"] is not None


async def test_queue_figures_before_anything_was_enqueued(redis_url: str, namespace: str) -> None:
    fresh = RedisJobQueue(Settings(redis_url=redis_url, redis_namespace=f"{namespace}-fresh"))
    try:
        stats = await fresh.stats()
    finally:
        await fresh.aclose()
    assert stats["length"] == stats["pending"] == stats["delayed"] == stats["deadLetters"] == 0
    assert stats["oldestPendingSeconds"] is None


async def test_consumers_of_dead_processes_are_pruned(env: Env) -> None:
    await env.redis.xadd(env.keys.stream, {"type": "github:fetch", "payload": "{}"})
    response: Any = await env.redis.xreadgroup(
        env.keys.group, "gone", {env.keys.stream: ">"}, count=1
    )
    await env.redis.xack(env.keys.stream, env.keys.group, response[0][1][0][0])
    await env.redis.xreadgroup(env.keys.group, "holder", {env.keys.stream: ">"}, count=1)
    await env.redis.xadd(env.keys.stream, {"type": "github:fetch", "payload": "{}"})
    await env.redis.xreadgroup(env.keys.group, "holder", {env.keys.stream: ">"}, count=1)
    # "Silent longer than 0 s" needs a measurable silence: Redis counts idle time in whole ms.
    await asyncio.sleep(0.01)
    assert await env.consumer.prune_consumers(idle_seconds=0) == 1
    names = {c["name"] for c in await env.redis.xinfo_consumers(env.keys.stream, env.keys.group)}
    assert names == {"holder"}  # it still holds a pending entry


async def _claims(env: Env) -> list[tuple[str, str, int]]:
    """(entry id, consumer, times delivered) of every pending entry."""
    rows: Any = await env.redis.xpending_range(env.keys.stream, env.keys.group, "-", "+", 100)
    return [(r["message_id"], r["consumer"], int(r["times_delivered"])) for r in rows]


async def test_job_longer_than_visibility_timeout_keeps_its_claim(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2.4 s of work against a 1 s visibility timeout, with a second worker reclaiming every
    0.5 s: the entry stays with the worker that took it, is delivered once, runs once."""
    monkeypatch.setenv("QUEUE_TEST_PAGES", "3")
    monkeypatch.setenv("QUEUE_TEST_PAGE_SECONDS", "0.8")
    await add_accounts(env.services, ["slow-1"])
    await env.queue.enqueue(Job(PROVIDER, "slow-1"))
    other = env.queue.consumer("other-worker")
    seen: set[tuple[str, str, int]] = set()
    async with (
        running_worker(env.settings, env.consumer, env.services),
        running_worker(env.settings, other, env.services),
    ):
        await wait_for(lambda: env.runs("running"))
        while not await env.runs("ok"):
            seen.update(await _claims(env))
            await asyncio.sleep(0.05)
        # Past another visibility timeout: nothing was handed on, deferred or run again.
        await asyncio.sleep(env.settings.job_visibility_timeout + 0.5)
    [(_, holder, deliveries)] = seen  # one owner, one delivery, from start to finish
    assert deliveries == 1
    assert holder in {env.consumer.name, other.name}
    runs = await SyncStateStore(env.services.db).recent_runs(10)
    assert [r.status for r in runs] == ["ok"]
    assert runs[0].upserted == 6
    assert await env.redis.zcard(env.keys.delayed) == 0
    assert await env.pending() == 0


async def test_job_outliving_the_grace_period_stays_pending_for_another_worker(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM's path in-process: the stop waits SHUTDOWN_GRACE_PERIOD, not for the job; the
    entry stays pending and another worker reclaims it and finishes from the last page."""
    monkeypatch.setenv("QUEUE_TEST_PAGES", "4")
    monkeypatch.setenv("QUEUE_TEST_PAGE_SECONDS", "0.6")  # 2.4 s of work
    settings = env.settings.model_copy(update={"shutdown_grace_period": 0.5})
    await add_accounts(env.services, ["slow-grace"])
    await env.queue.enqueue(Job(PROVIDER, "slow-grace"))
    worker = Worker(settings, env.consumer, engine_runner(env.services.engine))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await wait_for(lambda: env.runs("running"))
    stop.set()
    began = time.monotonic()
    await asyncio.wait_for(task, timeout=30)
    stopped_after = time.monotonic() - began
    assert stopped_after < 2.0, f"the stop waited {stopped_after:.1f}s for the job"
    assert await env.runs("ok") == []
    assert len(await env.runs("cancelled")) == 1  # the run says why it stopped
    [(entry, holder, _)] = await _claims(env)
    assert holder == env.consumer.name  # left pending, not acknowledged or handed back

    # Another worker process: its own consumer, and its engine syncs under that consumer's
    # lock (as `ingestion worker` wires them), so a lock its start takes is the one it uses.
    other = env.queue.consumer("other-worker")
    engine = copy.copy(env.services.engine)
    engine.lock = other.sync_lock()
    other_worker = Worker(env.settings, other, engine_runner(engine))
    stop_other = asyncio.Event()
    running = asyncio.create_task(other_worker.run(stop_other))
    try:
        await wait_for(lambda: env.runs("ok"), timeout=30)
    finally:
        stop_other.set()
        await asyncio.wait_for(running, timeout=30)
    assert await env.pending() == 0
    assert await env.dead() == []
    async with env.services.db.session() as session:
        ids = (await session.execute(select(MemoryRow.id))).scalars().all()
    assert sorted(ids) == sorted(f"github:slow-grace:o/r#{i}" for i in range(8))
    [finished] = await env.runs("ok")
    assert 0 < finished.upserted < 8  # resumed after the pages the first worker committed
    assert entry


async def test_job_for_a_pair_already_syncing_elsewhere_is_deferred_then_runs(env: Env) -> None:
    await add_accounts(env.services, ["ok-1"])
    lock = env.consumer.sync_lock()
    async with running_worker(env.settings, env.consumer, env.services):
        async with lock(PROVIDER, "ok-1"):  # another worker's sync of the same pair
            # A producer outside the service: no coalescing marker, only the lock protects.
            await env.redis.xadd(
                env.keys.stream, {"type": "github:fetch", "payload": '{"userId": "ok-1"}'}
            )

            async def deferred() -> list[Any]:
                return list(await env.redis.zrange(env.keys.delayed, 0, -1))

            [member] = await wait_for(deferred)
            fields = json.loads(member)
            assert dict(zip(fields[::2], fields[1::2], strict=True))["deferrals"] == "1"
            assert await env.runs("ok") == []
        await wait_for(lambda: env.runs("ok"), timeout=20)
    assert await env.dead() == []


async def test_retry_all_dead_letters_and_purge(env: Env) -> None:
    dead = {"error": "boom", "failedAt": "2026-01-01T00:00:00Z", "attempts": "5"}
    await env.redis.xadd(
        env.keys.dead, {"type": "github:fetch", "payload": '{"userId":"ok-1"}', **dead}
    )
    await env.redis.xadd(env.keys.dead, {"type": "nope", **dead})
    assert await env.queue.retry_dead(None) == 2
    entries = [fields for _, fields in await env.redis.xrange(env.keys.stream)]
    assert [f["type"] for f in entries] == ["github:fetch", "nope"]
    assert all(f["attempt"] == "1" and "error" not in f for f in entries)
    # The valid job holds its pair's coalescing marker again.
    assert (await env.queue.enqueue(Job(PROVIDER, "ok-1"))).coalesced
    assert await env.queue.retry_dead(["0-1"]) == 0
    await env.redis.xadd(env.keys.dead, {"type": "nope", **dead})
    assert await env.queue.purge_dead() == 1
    assert await env.redis.xlen(env.keys.dead) == 0


async def test_two_entries_of_one_pair_in_one_worker_never_sync_at_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock taken with a job's start belongs to that job's task alone: a second entry of
    the same pair read by the same worker (an outside producer, no coalescing marker) finds it
    busy and is deferred; the lock is released with the first job's acknowledgement."""
    monkeypatch.setenv("QUEUE_TEST_PAGES", "2")
    monkeypatch.setenv("QUEUE_TEST_PAGE_SECONDS", "0.3")
    await add_accounts(env.services, ["slow-2"])
    for _ in range(2):
        await env.redis.xadd(
            env.keys.stream, {"type": "github:fetch", "payload": '{"userId": "slow-2"}'}
        )
    lock_key = env.keys.sync_lock(PROVIDER, "slow-2")
    seen_held: list[str] = []

    async def held() -> bool:
        token = await env.redis.get(lock_key)
        if token:
            seen_held.append(token)
        return bool(token)

    async with running_worker(env.settings, env.consumer, env.services, concurrency=2):
        await wait_for(held, timeout=20, interval=0.01)  # taken with the first job's start

        async def both_ran() -> bool:
            return len(await env.runs("ok")) == 2

        await wait_for(both_ran, timeout=30)
        await wait_for(lambda: _gone(env.redis, lock_key), timeout=5)
    runs = sorted(await env.runs("ok"), key=lambda r: r.started_at)
    assert runs[0].finished_at is not None
    assert runs[0].finished_at <= runs[1].started_at  # one after the other, never together
    assert await env.pending() == 0
    assert await env.dead() == []


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_the_lock_taken_at_start_is_released_with_the_acknowledgement(env: Env) -> None:
    await add_accounts(env.services, ["ok-9"])
    job = Job(PROVIDER, "ok-9", job_id="job-ok-9")
    await env.queue.enqueue(job)
    [delivery] = await env.consumer.fetch(1, 1.0)
    assert delivery.job is not None
    started = await env.consumer.begin(delivery, delivery.job)
    lock_key = env.keys.sync_lock(PROVIDER, "ok-9")
    token = await env.redis.get(lock_key)
    assert token  # taken in the begin round trip
    ttl = await env.redis.pttl(lock_key)
    assert 0 < ttl <= 30_000
    lock = env.consumer.sync_lock()
    async with lock(PROVIDER, "ok-9"):  # this task's job: held already, no second take
        assert await env.redis.get(lock_key) == token
    assert await env.redis.get(lock_key) == token  # still held until the job settles
    await env.consumer.complete(delivery)
    assert await env.redis.exists(lock_key) == 0
    assert started.user_id == "ok-9"


async def test_concurrency_bounds_running_jobs_and_stuck_acknowledgements_hold_new_reads(
    env: Env,
) -> None:
    """At most `concurrency` jobs run at once (and that many do); a job whose runner returned
    frees its slot while it is acknowledged, but acknowledgements that cannot get through stop
    new reads once as many again are waiting: nothing piles up behind a broken settle."""
    running = peak = started = 0

    async def runner(job: Job) -> None:
        nonlocal running, peak, started
        started += 1
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    for i in range(24):
        await env.queue.enqueue(Job(PROVIDER, f"bound-{i}"))
    worker = Worker(env.settings, env.consumer, runner, concurrency=3)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: _true(started == 24))
        assert peak == 3
        await wait_for(lambda: _zero(env.pending()))

        # Acknowledgements now hang: three jobs run, three more, then reads stop.
        gate = asyncio.Event()
        complete = env.consumer.complete

        async def stuck_complete(delivery: Any) -> None:
            await gate.wait()
            await complete(delivery)

        env.consumer.complete = stuck_complete  # type: ignore[method-assign]
        started = peak = 0
        for i in range(24):
            await env.queue.enqueue(Job(PROVIDER, f"stuck-{i}"))
        await wait_for(lambda: _true(started == 6))
        await asyncio.sleep(0.3)
        assert started == 6  # 3 running + 3 more, each now waiting to be acknowledged
        assert peak == 3
        gate.set()
        await wait_for(lambda: _true(started == 24))
        await wait_for(lambda: _zero(env.pending()))
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def _true(value: bool) -> bool:
    return value


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_every_job_logs_with_its_own_ids(env: Env) -> None:
    """What a job logs carries its job id, provider and user id, and only its own: jobs run
    side by side and one after another in the same worker."""
    seen: dict[str, dict[str, Any]] = {}

    async def runner(job: Job) -> None:
        await asyncio.sleep(0.01)
        seen[job.user_id] = dict(structlog.contextvars.get_contextvars())

    job_ids = {}
    for i in range(9):
        job_ids[f"ctx-{i}"] = (await env.queue.enqueue(Job(PROVIDER, f"ctx-{i}"))).job_id
    worker = Worker(env.settings, env.consumer, runner, concurrency=3)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: _true(len(seen) == 9))
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    for user, context in seen.items():
        assert context == {"job_id": job_ids[user], "provider": PROVIDER, "user_id": user}
    assert "job_id" not in structlog.contextvars.get_contextvars()


async def test_a_failed_acknowledgement_keeps_the_lock_until_a_retry_settles_the_job(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acknowledgement that also releases the job's sync lock fails (the connection drops):
    the lock stays the job's (held, renewed) and the worker's retry releases it, instead of it
    lingering unowned until it expires."""
    await env.queue.enqueue(Job(PROVIDER, "ack-1"))
    [delivery] = await env.consumer.fetch(1, 1.0)
    assert delivery.job is not None
    await env.consumer.begin(delivery, delivery.job)
    lock_key = env.keys.sync_lock(PROVIDER, "ack-1")
    token = await env.redis.get(lock_key)
    assert token

    channel = env.consumer.channel
    script = channel.script
    failures = [RedisConnectionError("connection dropped")]

    async def failing_once(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await script(*args)

    monkeypatch.setattr(channel, "script", failing_once)
    with pytest.raises(RedisConnectionError):
        await env.consumer.complete(delivery)
    assert await env.redis.get(lock_key) == token  # still the job's
    assert await env.pending() == 1
    await asyncio.sleep(1.2)  # past the lock's 1 s lifetime: renewed meanwhile
    assert await env.redis.get(lock_key) == token
    await env.consumer.complete(delivery)
    assert await env.redis.exists(lock_key) == 0
    assert await env.pending() == 0


async def test_held_sync_locks_are_renewed_until_released(env: Env) -> None:
    """A lock lives 1 s here (the visibility timeout): one taken with a job's start and one
    taken by the engine's own `with lock(…)` both outlive several lifetimes while held, and
    stop being renewed once released (nothing renews a key someone else took since)."""
    await env.queue.enqueue(Job(PROVIDER, "long-1"))
    [delivery] = await env.consumer.fetch(1, 1.0)
    assert delivery.job is not None
    await env.consumer.begin(delivery, delivery.job)
    adopted = env.keys.sync_lock(PROVIDER, "long-1")
    own = env.keys.sync_lock(PROVIDER, "long-2")
    lock = env.consumer.sync_lock()
    async with lock(PROVIDER, "long-2"):
        token = await env.redis.get(own)
        await asyncio.sleep(2.5)  # two and a half lifetimes
        assert await env.redis.get(own) == token
        assert await env.redis.get(adopted)
    assert await env.redis.exists(own) == 0
    await env.consumer.complete(delivery)
    assert await env.redis.exists(adopted) == 0
    await env.redis.set(own, "someone-else", px=60_000)
    await asyncio.sleep(0.8)  # past a renewal interval: nothing touches the other owner's key
    assert await env.redis.get(own) == "someone-else"
    assert 50_000 < await env.redis.pttl(own) <= 60_000


async def test_scripts_redis_does_not_have_yet_run_anyway(env: Env) -> None:
    """Settling pipelines call scripts by SHA with no `SCRIPT EXISTS` round trip; a script
    Redis has not loaded (after a restart or a flush) fails alone and is run again, loaded."""
    fresh = env.queue.redis.register_script(
        f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])"
    )
    counter = f"{env.keys.namespace}:test-counter"
    replies = await _run_scripts(
        env.queue.redis, [(fresh, [counter], []), (fresh, [counter], []), (fresh, [counter], [])]
    )
    assert replies == [1, 2, 3]  # each ran exactly once, in order
    assert await _run_scripts(env.queue.redis, [(fresh, [counter], [])]) == [4]  # loaded now
