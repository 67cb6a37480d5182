"""What the service keeps per user after many scheduled ticks: Redis bytes and database rows.

    uv run python bench/bench_retention.py [--users N] [--ticks T] [--redis-url URL]

Simulates T scheduler ticks (default 1,000: about ten days at the default `*/15` cron) for N
users with all four providers connected, through the real queue (`RedisJobQueue`, the tick
enqueue script, a `Worker` running `SyncEngine`) on Redis and an SQLite database. One provider
of every user fails each tick with the same permanent error (a missing scope), the way the
dead-letter stream used to grow by one entry per tick. Every other sync stores one record.

The ticks run back to back, so Redis has not yet expired the tick keys of simulated time:
before measuring, the keys of ticks older than one tick-key lifetime (`retention.tick_ttl`)
before the last tick are removed, as Redis would have done by then.
Redis bytes are `MEMORY USAGE` of every key of the run's namespace. Writes
bench/results/retention.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select

from ingestion.config import Settings
from ingestion.errors import PermanentError
from ingestion.memory.record import MemoryRecord
from ingestion.providers import registry
from ingestion.providers.base import SyncContext, SyncPage
from ingestion.queue import Keys, RedisJobQueue, retention
from ingestion.queue.jobs import Job
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.models import Base
from ingestion.worker import Worker, engine_runner

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "retention.md"
PROVIDERS = ("gmail", "calendar", "github", "twitter")
ACCOUNT_OF = {"gmail": "google", "calendar": "google", "github": "github", "twitter": "twitter"}
#: The provider that fails every tick for every user (as a missing scope does).
FAILING = "calendar"
TICK_SECONDS = 900


def bench_provider(name: str) -> Any:
    class Provider:
        account_provider = ACCOUNT_OF[name]

        def __init__(self, settings: Settings) -> None:
            self.name = name

        async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
            if name == FAILING:
                raise PermanentError(f"{name}: HTTP 403: insufficient permissions (missing scope)")
            tick = int(ctx.state.get("tick", 0)) + 1
            record = MemoryRecord.build(
                source=name,  # type: ignore[arg-type]
                user_id=ctx.user_id,
                source_id=f"item-{tick % 50}",
                type="issue" if name == "github" else "tweet" if name == "twitter" else "email",
                title=f"item {tick}",
                content=f"content of item {tick}",
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
            yield SyncPage(state={"tick": tick}, upserts=[record], fetched=1)

    return Provider


async def idle(queue: RedisJobQueue) -> bool:
    stats = await queue.stats()
    return not (stats["pending"] or stats["waiting"] or stats["delayed"])


async def run(users: int, ticks: int, redis_url: str) -> dict[str, Any]:
    for name in PROVIDERS:
        registry._overrides[name] = bench_provider(name)
    namespace = f"bench-retention-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        redis_namespace=namespace,
        database_url=f"sqlite:///{folder / 'ingestion.db'}",
        worker_concurrency=8,
        job_max_attempts=1,
        schedule_jitter_seconds=0,
    )
    queue = RedisJobQueue(settings)
    consumer = queue.consumer()
    await consumer.start()
    services = await Services.open(settings, lock=consumer.sync_lock())
    redis = Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(namespace)
    user_ids = [f"user-{i}" for i in range(users)]
    async with services.db.session() as session:
        for user in user_ids:
            for account in ("google", "github", "twitter"):
                await save_account(
                    session, user_id=user, provider_id=account, access_token=f"t-{user}"
                )
    worker = Worker(settings, consumer, engine_runner(services.engine))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    first_tick = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    started = time.perf_counter()
    try:
        for tick in range(ticks):
            epoch = first_tick + tick * TICK_SECONDS
            for user in user_ids:
                for provider in PROVIDERS:
                    await queue.enqueue_tick(Job(provider, user), epoch, 0.0)
            while not await idle(queue):  # noqa: ASYNC110 (polls Redis, not a local flag)
                await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        last_tick = first_tick + (ticks - 1) * TICK_SECONDS
        await consumer.trim()
        tick_keys = [k async for k in redis.scan_iter(match=f"{namespace}:tick:*", count=1000)]
        tick_ttl = max(retention.tick_ttl(settings, p, last_tick) for p in PROVIDERS)
        expired = [k for k in tick_keys if int(k.rsplit(":", 1)[1]) < last_tick - tick_ttl]
        for start in range(0, len(expired), 1000):
            await redis.delete(*expired[start : start + 1000])
        by_kind: Counter[str] = Counter()
        count_by_kind: Counter[str] = Counter()
        async for key in redis.scan_iter(match=f"{namespace}:*", count=1000):
            kind = key.removeprefix(f"{namespace}:").split(":", 1)[0]
            if key == keys.dead or key.startswith(f"{keys.dead}:"):
                kind = "jobs:dead" + (":seen" if key != keys.dead else "")
            elif key == keys.stream:
                kind = "jobs (stream)"
            by_kind[kind] += int(await redis.memory_usage(key) or 0)
            count_by_kind[kind] += 1
        dead_entries = await redis.xlen(keys.dead)
        dead = await queue.dead_letters(5)
        rows: dict[str, int] = {}
        async with services.db.session() as session:
            for table in Base.metadata.sorted_tables:
                if table.name.startswith("ingestion_"):
                    rows[table.name] = int(
                        await session.scalar(select(func.count()).select_from(table)) or 0
                    )
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
        await services.aclose()
        keys_left = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys_left), 1000):
            await redis.delete(*keys_left[start : start + 1000])
        await redis.aclose()
        await queue.aclose()
    return {
        "users": users,
        "ticks": ticks,
        "jobs": users * len(PROVIDERS) * ticks,
        "seconds": elapsed,
        "redis_bytes": dict(by_kind),
        "redis_keys": dict(count_by_kind),
        "tick_ttl": tick_ttl,
        "dead_entries": dead_entries,
        "dead_count": dead[0].count if dead else 0,
        "rows": rows,
    }


def report(result: dict[str, Any]) -> str:
    users = result["users"]
    total_bytes = sum(result["redis_bytes"].values())
    total_rows = sum(result["rows"].values())
    runs = result["rows"].get("ingestion_sync_runs", 0)
    bookkeeping = runs + result["rows"].get("ingestion_sync_state", 0)
    ticks = result["ticks"]
    load = os.getloadavg()[0]
    lines = [
        "# Retention: what stays per user after many ticks",
        "",
        f"`uv run python bench/bench_retention.py --users {users} --ticks {ticks}`: "
        f"{result['jobs']:,} jobs ({users} users x 4 providers x {ticks:,} ticks of `*/15`, "
        f"about {ticks * TICK_SECONDS / 86400:.1f} days), {FAILING} failing every tick with the "
        f"same permanent error; {result['seconds']:.0f} s on the 2-core machine "
        f"(load average {load:.1f}). Redis 7 `MEMORY USAGE`; SQLite rows; defaults "
        "(`SYNC_RUNS_KEEP` 50, `DEAD_LETTER_MAX_ENTRIES` 10,000, tick keys one interval).",
        "",
        "| per user | after | before this change (same ticks) |",
        "|---|---|---|",
        f"| Redis bytes | **{total_bytes / users:,.0f}** | tick keys alone: ~768 keys x "
        "~229 B ≈ 176,000 (two days of ticks), plus one dead letter per failed tick |",
        f"| tick keys (lifetime {result['tick_ttl']} s) | "
        f"{result['redis_keys'].get('tick', 0) / users:.0f} | ~768 (two days x 4 providers) |",
        f"| dead letters | {result['dead_entries'] / users:.0f} (count {result['dead_count']:,})"
        f" | {ticks:,} (one per failed tick, never trimmed) |",
        f"| `ingestion_sync_runs` rows | "
        f"{result['rows'].get('ingestion_sync_runs', 0) / users:.0f} | {4 * ticks:,} |",
        f"| bookkeeping rows (`ingestion_sync_runs` + `ingestion_sync_state`) | "
        f"{bookkeeping / users:,.0f} | {4 * ticks + 4:,} |",
        f"| database rows, all `ingestion_*` tables (with the synced items) | "
        f"{total_rows / users:,.0f} | {(total_rows - runs) / users + 4 * ticks:,.0f} |",
        "",
        "Redis by key kind (bytes, all users):",
        "",
        "| kind | keys | bytes |",
        "|---|---|---|",
    ]
    for kind, size in sorted(result["redis_bytes"].items(), key=lambda item: -item[1]):
        lines.append(f"| `{kind}` | {result['redis_keys'][kind]} | {size:,} |")
    lines += ["", "Database rows by table (all users):", "", "| table | rows |", "|---|---|"]
    for table, count in sorted(result["rows"].items()):
        lines.append(f"| `{table}` | {count:,} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.users, args.ticks, args.redis_url))
    text = report(result)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
