"""HTTP API figures: sync triggers per second, status document, status page and metrics scrape.

    uv run python bench/bench_api.py [--users N] [--requests N]

A real `ingestion api` process (PostgreSQL in a fresh database, Redis in a unique namespace,
INGESTION_API_KEY set) serves `--users` users, each with Google, GitHub and X accounts and a
sync state row per provider. This process measures, over loopback:

- `POST /v1/sync` with 16 requests in flight, every request a distinct (provider, user) pair
  (each one checks the account in PostgreSQL and runs the enqueue script in Redis);
- the same pairs again: all coalesced with the queued jobs;
- `GET /v1/status`, `GET /` (the status page) and `GET /metrics` latency and size.

Prints a markdown table and writes it to bench/results/api.md. Bounded: about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.emulators.server import free_port  # noqa: E402

from ingestion.config import Settings  # noqa: E402
from ingestion.services import Services  # noqa: E402
from ingestion.storage.db import upgrade  # noqa: E402
from ingestion.storage.models import Account, SyncStateRow, User  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "bench-api-key-of-at-least-32-characters"
PROVIDERS = ("gmail", "calendar", "github", "twitter")


async def seed(settings: Settings, users: int) -> None:
    await asyncio.to_thread(upgrade, settings)
    services = await Services.open(settings, migrate=False)
    now = datetime.now(UTC)
    try:
        async with services.db.session() as session:
            for n in range(users):
                user = f"user-{n:05d}"
                session.add(User(id=user, name=user, email=f"{user}@example.com"))
            await session.flush()
            for n in range(users):
                user = f"user-{n:05d}"
                for provider_id in ("google", "github", "twitter"):
                    session.add(
                        Account(
                            id=uuid.uuid4().hex,
                            account_id=user,
                            provider_id=provider_id,
                            user_id=user,
                            access_token=f"t-{provider_id}-{user}",
                            created_at=now,
                            updated_at=now,
                        )
                    )
                for p, provider in enumerate(PROVIDERS):
                    session.add(
                        SyncStateRow(
                            user_id=user,
                            provider=provider,
                            status="error" if (n + p) % 97 == 0 else "ok",
                            cursor={"c": n},
                            last_sync_time=now - timedelta(minutes=(n + p) % 60),
                            last_error="HTTP 503" if (n + p) % 97 == 0 else None,
                            items_fetched=n * 3 + p,
                            items_upserted=n * 3 + p,
                            items_deleted=0,
                        )
                    )
    finally:
        await services.aclose()


def timed_gets(client: httpx.Client, path: str, times: int) -> tuple[list[float], int]:
    durations = []
    size = 0
    for _ in range(times):
        started = time.perf_counter()
        response = client.get(path, headers={"Authorization": f"Bearer {KEY}"})
        durations.append(time.perf_counter() - started)
        response.raise_for_status()
        size = len(response.content)
    return durations, size


async def trigger(url: str, pairs: list[tuple[str, str]]) -> tuple[float, list[dict[str, Any]]]:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(16)

        async def one(provider: str, user: str) -> dict[str, Any]:
            async with gate:
                response = await client.post(
                    "/v1/sync",
                    json={"provider": provider, "userId": user},
                    headers={"Authorization": f"Bearer {KEY}"},
                )
                assert response.status_code == 202, response.text
                body: dict[str, Any] = response.json()
                return body

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(p, u) for p, u in pairs))
        return time.perf_counter() - started, list(answers)


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.median(ordered) * 1000:.1f} / {p95 * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    database = f"bench_api_{uuid.uuid4().hex[:10]}"
    namespace = f"bench-api-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    pg_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"
    settings = Settings(database_url=pg_url, redis_url=REDIS_URL, redis_namespace=namespace)
    process: subprocess.Popen[bytes] | None = None
    rows: list[tuple[str, str]] = []
    try:
        asyncio.run(seed(settings, args.users))
        port = free_port()
        prometheus = tempfile.mkdtemp(prefix="bench-api-prom-")
        env = {
            **os.environ,
            "DATABASE_URL": pg_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_NAMESPACE": namespace,
            "INGESTION_API_KEY": KEY,
            "API_PORT": str(port),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": prometheus,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "ingestion.cli", "api"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("ingestion api did not start")
            time.sleep(0.1)

        total = min(args.requests, args.users * len(PROVIDERS))
        pairs = [(PROVIDERS[i % 4], f"user-{i // 4:05d}") for i in range(total)]
        asyncio.run(trigger(url, pairs[:20]))  # warm-up (connections, prepared statements)
        seconds, answers = asyncio.run(trigger(url, pairs[20:]))
        fresh = sum(1 for a in answers if not a["coalesced"])
        rows.append(
            (
                f"POST /v1/sync, {len(answers)} distinct pairs, 16 in flight",
                f"{len(answers) / seconds:.0f} req/s ({fresh} enqueued)",
            )
        )
        seconds, answers = asyncio.run(trigger(url, pairs[20:]))
        coalesced = sum(1 for a in answers if a["coalesced"])
        rows.append(
            (
                "POST /v1/sync, the same pairs again",
                f"{len(answers) / seconds:.0f} req/s ({coalesced} coalesced)",
            )
        )
        stream = redis.Redis.from_url(REDIS_URL)
        rows.append(("jobs on the stream afterwards", str(stream.xlen(f"{namespace}:jobs"))))
        stream.close()
        with httpx.Client(base_url=url, timeout=60) as client:
            for path, label in (
                ("/v1/status", "GET /v1/status"),
                ("/", "GET / (status page)"),
                ("/metrics", "GET /metrics"),
                ("/v1/accounts/user-00042", "GET /v1/accounts/{userId}"),
            ):
                durations, size = timed_gets(client, path, 15)
                rows.append((f"{label}, median / p95 ms", f"{ms(durations)} ({size:,} bytes)"))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        cleanup = redis.Redis.from_url(REDIS_URL)
        keys = list(cleanup.scan_iter(match=f"{namespace}*"))
        if keys:
            cleanup.delete(*keys)
        cleanup.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    load = os.getloadavg()[0]
    lines = [
        f"# HTTP API ({args.users} users x 4 providers, PostgreSQL + Redis, one api process)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} "
        "when measured (other work was running).",
        "",
        "| measure | result |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / "api.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
