"""The control plane at 100,000 users on one PostgreSQL and one Redis.

    uv run python bench/bench_scale.py [--users 100000] [--before-src DIR]

Seeds a fresh PostgreSQL database (COPY) with `--users` Better Auth users, each with a Google,
a GitHub and an X account, and a sync state row per provider: about 1 % `reauth_required`
(skipped by the scheduler until reconnected), 0.5 % in `error`, 1 % never synced; plus run
history and delivered records for the reconciliation sweep. Then, for each code tree (the
checkout's `src/`, and with `--before-src` an older tree measured first on the same data:
side by side, same run), every figure is taken in child processes running that tree:

- scheduler: one tick of one provider (`Scheduler.enqueue_tick`, jitter on: every job waits
  in the delayed set), timed, with the Redis bytes it left per queued job; then the next tick
  (every pair still queued: coalesced); the after tree also runs three schedulers at once on
  a fresh tick and checks one job per due user;
- API (`ingestion api`, one process): `/v1/status` pages, the aggregate, the status page,
  `/metrics`, `/v1/accounts/{userId}` and `POST /v1/sync` throughput (16 in flight);
- a real `ingestion worker` for a few seconds on the tick's jobs (provider URLs point at a
  closed local port: no job reaches the internet) for its memory;
- RSS (VmHWM) of each process.

The after tree also prints `EXPLAIN ANALYZE` of every hot query, built by the service's own
functions. The queue throughput figures are bench/bench_queue.py's. Writes
bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.md"
PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "bench-scale-api-key-0123456789abcdef"
PROVIDERS = ("gmail", "calendar", "github", "twitter")
ACCOUNT_PROVIDERS = ("google", "github", "twitter")
TICK = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
#: Closed local port: a worker's provider requests fail at once, never leave the machine.
NOWHERE = "http://127.0.0.1:9"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fingerprint(access: str, refresh: str) -> str:
    # Frozen copy of ingestion.storage.accounts.fingerprint (raw column values).
    return hashlib.sha256(f"{access}\x00{refresh}".encode()).hexdigest()[:16]


# --- seeding ------------------------------------------------------------------------------------


def user_id(n: int) -> str:
    return f"user-{n:06d}"


def _copy(conn: psycopg.Connection, table: str, columns: str, rows: Iterator[str]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for i, row in enumerate(rows):
            buffer.write(row)
            if i % 20000 == 19999:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def seed(pg_url: str, users: int) -> dict[str, float]:
    now = datetime.now(UTC).replace(tzinfo=None)
    stamp = now.isoformat(sep=" ")
    started = time.perf_counter()
    with psycopg.connect(pg_url) as conn:
        _copy(
            conn,
            '"user"',
            'id, name, email, "emailVerified", "createdAt", "updatedAt"',
            (
                f"{user_id(n)}\t{user_id(n)}\t{user_id(n)}@example.com\tf\t{stamp}\t{stamp}\n"
                for n in range(users)
            ),
        )

        def accounts() -> Iterator[str]:
            for n in range(users):
                u = user_id(n)
                for p in ACCOUNT_PROVIDERS:
                    yield (
                        f"acc-{p}-{n}\t{u}\t{p}\t{u}\tat-{p}-{u}\trt-{p}-{u}\t{stamp}\t{stamp}\n"
                    )

        _copy(
            conn,
            "account",
            'id, "accountId", "providerId", "userId", "accessToken", "refreshToken", '
            '"createdAt", "updatedAt"',
            accounts(),
        )

        def states() -> Iterator[str]:
            for n in range(users):
                u = user_id(n)
                for i, provider in enumerate(PROVIDERS):
                    k = (n * 7 + i) % 1000
                    ap = "google" if provider in ("gmail", "calendar") else provider
                    last = (now - timedelta(seconds=(n * 13 + i * 101) % 7200)).isoformat(sep=" ")
                    status, error, fp, last_sync = "ok", "\\N", "\\N", last
                    if k < 10:
                        status = "reauth_required"
                        error = "invalid_grant: Token has been expired or revoked."
                        fp = _fingerprint(f"at-{ap}-{u}", f"rt-{ap}-{u}")
                    elif k < 15:
                        status, error = "error", "HTTP 503 from the provider"
                    elif k < 25:
                        status, last_sync = "idle", "\\N"
                    yield (
                        f"{u}\t{provider}\t{status}\t{last_sync}\t"
                        f'{{"cursor": {n}}}\t{error}\t{n % 500}\t{n % 500}\t0\t{fp}\t{stamp}\n'
                    )

        _copy(
            conn,
            "ingestion_sync_state",
            "user_id, provider, status, last_sync_time, metadata, last_error, items_fetched, "
            "items_upserted, items_deleted, reauth_fingerprint, updated_at",
            states(),
        )
        _copy(
            conn,
            "ingestion_sync_runs",
            "job_id, user_id, provider, started_at, finished_at, status, details",
            (
                f"job-{r}\t{user_id(r % users)}\t{PROVIDERS[r % 4]}\t{stamp}\t{stamp}\tok\t{{}}\n"
                for r in range(min(users, 50_000))
            ),
        )
        # Delivered records: 200 users with 1,000 each (a sweep walks one user's rows).
        _copy(
            conn,
            "ingestion_delivered",
            "user_id, provider, source_id, occurred_at, generation",
            (
                f"{user_id(n)}\tgmail\tmsg-{m:06d}\t{stamp}\t1\n"
                for n in range(0, min(users, 200))
                for m in range(1000)
            ),
        )
        conn.commit()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {"seconds": time.perf_counter() - started}


# --- children (run one code tree) ---------------------------------------------------------------


def _rss() -> dict[str, float]:
    """Peak and current RSS of this process, MiB."""
    status = Path("/proc/self/status").read_text()
    now = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_mib": now / 1024, "peak_mib": peak / 1024}


def _proc_rss(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return {"rss_mib": values.get("VmRSS", 0.0), "peak_mib": values.get("VmHWM", 0.0)}


async def child_scheduler(pg_url: str, namespace: str, provider: str, tick: str) -> None:
    from ingestion.config import Settings
    from ingestion.queue import RedisJobQueue
    from ingestion.scheduler import Scheduler
    from ingestion.storage.db import open_database

    settings = Settings(
        database_url=pg_url,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        schedule_jitter_seconds=30,
        log_level="warning",
        log_format="json",
    )
    db = await open_database(settings)
    queue = RedisJobQueue(settings)
    scheduler = Scheduler(settings, queue, db, providers=[provider])
    when = datetime.fromisoformat(tick)
    started = time.perf_counter()
    report = await scheduler.enqueue_tick(provider, when)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"seconds": seconds, "outcomes": report.outcomes, **_rss()}
    print(json.dumps(result), flush=True)
    await queue.aclose()
    await db.dispose()


def hot_queries(sample: str) -> list[tuple[str, Any]]:
    """Every hot query, built by the service's own statement functions (or, for the plain
    primary-key reads and writes the ORM issues, the same statement written out)."""
    from sqlalchemy import delete, func, literal_column, select, update

    from ingestion.reconcile import SWEEP_BATCH, _under
    from ingestion.storage.accounts import (
        account_exists_statement,
        due_page_statement,
        find_account_statement,
    )
    from ingestion.storage.models import Account, DeliveredRow, SyncRun, SyncStateRow
    from ingestion.storage.overview import (
        aggregate_statement,
        median_statement,
        status_page_statement,
        users_page_statement,
    )

    users = [user_id(n) for n in range(50_000, 50_101)]
    mine = (DeliveredRow.user_id == user_id(42)) & (DeliveredRow.provider == "gmail")
    return [
        (
            "scheduler page (1,000 accounts after a user id)",
            due_page_statement("github", "github", sample, 1000),
        ),
        ("POST /v1/sync account check", account_exists_statement(sample, "github")),
        ("account lookup (token service, sync engine)", find_account_statement(sample, "google")),
        (
            "state load (primary key)",
            select(SyncStateRow).where(
                SyncStateRow.user_id == sample, SyncStateRow.provider == "gmail"
            ),
        ),
        (
            "state checkpoint (primary key update)",
            update(SyncStateRow)
            .where(SyncStateRow.user_id == sample, SyncStateRow.provider == "gmail")
            .values(
                cursor=literal_column('\'{"historyId": "1"}\'::json'),
                items_fetched=SyncStateRow.items_fetched + 1,
                updated_at=func.now(),
            ),
        ),
        ("status aggregate (grouped, index-only)", aggregate_statement()),
        ("status aggregate: median cursor age of one provider", median_statement("github", 99_000)),
        (
            "status page: the next users (keyset, two indexes merged)",
            users_page_statement(["github", "google", "twitter"], PROVIDERS, sample, 101),
        ),
        (
            "status page: the page's accounts",
            select(Account.user_id, Account.provider_id).where(Account.user_id.in_(users)),
        ),
        (
            "status page: the page's states",
            select(SyncStateRow).where(
                SyncStateRow.user_id.in_(users), SyncStateRow.provider.in_(PROVIDERS)
            ),
        ),
        (
            "status page filtered by status (keyset)",
            status_page_statement("reauth_required", None, (sample, "gmail"), 101),
        ),
        ("recent runs", select(SyncRun).order_by(SyncRun.id.desc()).limit(20)),
        (
            "delivered-records sweep: one batch",
            select(DeliveredRow.source_id)
            .where(mine, _under("msg-"), DeliveredRow.source_id > "msg-000100")
            .order_by(DeliveredRow.source_id)
            .limit(SWEEP_BATCH),
        ),
        (
            "delivered-records sweep: forget a batch",
            delete(DeliveredRow).where(
                mine, DeliveredRow.source_id.in_([f"msg-{m:06d}" for m in range(10)])
            ),
        ),
    ]


async def child_explain(pg_url: str) -> None:
    """EXPLAIN ANALYZE of every hot query (writes rolled back)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    out: dict[str, str] = {}
    with psycopg.connect(pg_url) as conn:
        for name, statement in hot_queries(user_id(50_000)):
            sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            plan = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}").fetchall()
            conn.rollback()
            out[name] = sql + "\n\n" + "\n".join(row[0] for row in plan)
    print(json.dumps(out), flush=True)


def child_main(args: argparse.Namespace) -> None:
    from ingestion.config import Settings
    from ingestion.logs import configure_logging

    settings = Settings(log_level="warning", log_format="json")
    configure_logging(settings)
    try:  # the event loop `ingestion scheduler` runs on (an older tree has no choice)
        from ingestion.loop import loop_factory

        factory = loop_factory(settings.event_loop)
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        if args.child == "scheduler":
            runner.run(child_scheduler(args.pg, args.ns, args.provider, args.tick))
        elif args.child == "explain":
            runner.run(child_explain(args.pg))


def run_child(src: Path, timeout: float, *extra: str) -> dict[str, Any] | None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen(
        [sys.executable, __file__, *extra], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    if proc.returncode != 0:
        raise SystemExit(f"child {extra} failed with {proc.returncode}")
    parsed: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return parsed


# --- measuring one tree -------------------------------------------------------------------------


def redis_bytes(namespace: str, jobs: int) -> float:
    """Redis memory the tick left behind, per queued job (delayed set + markers + tick keys)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        total = int(client.memory_usage(f"{namespace}:jobs:delayed", samples=0) or 0)
        total += int(client.memory_usage(f"{namespace}:jobs", samples=0) or 0)
        for pattern in (f"{namespace}:active:*", f"{namespace}:tick:*"):
            sample = []
            for key in client.scan_iter(match=pattern, count=1000):
                sample.append(key)
                if len(sample) >= 200:
                    break
            if sample:
                each = statistics.mean(int(client.memory_usage(k) or 0) for k in sample)
                total += int(each * jobs)
        return total / jobs if jobs else 0.0
    finally:
        client.close()


def cleanup_redis(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch = []
        for key in client.scan_iter(match=f"{namespace}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def timed_gets(
    client: httpx.Client, path: str, times: int
) -> tuple[list[float], int, dict[str, Any] | None]:
    durations: list[float] = []
    size = 0
    body: dict[str, Any] | None = None
    for _ in range(times):
        started = time.perf_counter()
        response = client.get(path, headers={"Authorization": f"Bearer {KEY}"})
        durations.append(time.perf_counter() - started)
        response.raise_for_status()
        size = len(response.content)
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
    return durations, size, body


async def trigger(url: str, pairs: list[tuple[str, str]]) -> float:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(16)

        async def one(provider: str, user: str) -> None:
            async with gate:
                response = await client.post(
                    "/v1/sync",
                    json={"provider": provider, "userId": user},
                    headers={"Authorization": f"Bearer {KEY}"},
                )
                assert response.status_code == 202, response.text

        started = time.perf_counter()
        await asyncio.gather(*(one(p, u) for p, u in pairs))
        return time.perf_counter() - started


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("ingestion api did not start")
        time.sleep(0.2)


def measure_api(src: Path, pg_url: str, namespace: str, users: int, label: str) -> dict[str, Any]:
    port = _free_port()
    prometheus = tempfile.mkdtemp(prefix="bench-scale-prom-")
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": namespace,
        "INGESTION_API_KEY": KEY,
        "API_PORT": str(port),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": prometheus,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestion.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    try:
        wait_ready(url, proc)
        old = label == "before"
        with httpx.Client(base_url=url, timeout=600) as client:
            times = 1 if old else 25  # today's code reads every row: once is enough
            durations, size, body = timed_gets(client, "/v1/status?limit=100", times)
            result["status_page"] = (ms(durations), size)
            if body and body.get("nextCursor"):
                cursor = body["nextCursor"]
                durations, size, _ = timed_gets(
                    client, f"/v1/status?limit=100&cursor={cursor}", times
                )
                result["status_next"] = (ms(durations), size)
                durations, size, _ = timed_gets(
                    client, "/v1/status?limit=100&status=reauth_required&provider=github", times
                )
                result["status_filtered"] = (ms(durations), size)
                durations, size, body = timed_gets(client, "/v1/status?limit=0", times)
                result["aggregate"] = (ms(durations), size)
            durations, size, _ = timed_gets(client, "/", times)
            result["page"] = (ms(durations), size)
            durations, size, _ = timed_gets(client, f"/?user={user_id(42)}", times)
            result["page_search"] = (ms(durations), size)
            durations, size, _ = timed_gets(client, "/metrics", 3 if old else 25)
            result["metrics"] = (ms(durations), size)
            durations, size, _ = timed_gets(client, f"/v1/accounts/{user_id(42)}", 25)
            result["account"] = (ms(durations), size)
        total = 2000
        pairs = [(PROVIDERS[i % 4], user_id((i * 37) % users)) for i in range(total)]
        asyncio.run(trigger(url, pairs[:40]))  # warm-up
        seconds = asyncio.run(trigger(url, pairs[40:]))
        result["sync_rps"] = (total - 40) / seconds
        seconds = asyncio.run(trigger(url, pairs[40:]))
        result["sync_rps_coalesced"] = (total - 40) / seconds
        result["rss"] = _proc_rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return result


def measure_worker(src: Path, pg_url: str, namespace: str, seconds: float) -> dict[str, float]:
    """A real `ingestion worker` on the tick's jobs for `seconds`; every provider URL is a
    closed local port (jobs fail and are retried later; nothing leaves the machine)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": namespace,
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "GMAIL_API_URL": NOWHERE,
        "CALENDAR_API_URL": NOWHERE,
        "GITHUB_API_URL": NOWHERE,
        "TWITTER_API_URL": NOWHERE,
        "GOOGLE_TOKEN_URL": NOWHERE,
        "GITHUB_TOKEN_URL": NOWHERE,
        "TWITTER_TOKEN_URL": NOWHERE,
        "MEMORY_ENGINE_URL": NOWHERE,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestion.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(seconds)
        return _proc_rss(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure_tree(
    src: Path, label: str, pg_url: str, users: int, scheduler_timeout: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"label": label}
    namespace = f"bench-scale-{label}-{uuid.uuid4().hex[:6]}"
    try:
        common = ["--pg", pg_url, "--ns", namespace, "--provider", "github"]
        tick = run_child(
            src,
            scheduler_timeout,
            "--child",
            "scheduler",
            *common,
            "--tick",
            TICK.isoformat(),
        )
        result["tick"] = tick
        if tick is not None:
            jobs = tick["outcomes"].get("enqueued", 0)
            result["bytes_per_job"] = redis_bytes(namespace, jobs)
            result["tick2"] = run_child(
                src,
                scheduler_timeout,
                "--child",
                "scheduler",
                *common,
                "--tick",
                (TICK + timedelta(minutes=15)).isoformat(),
            )
            if label == "after":
                fresh = f"{namespace}-three"
                three = [
                    subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            "scheduler",
                            "--pg",
                            pg_url,
                            "--ns",
                            fresh,
                            "--provider",
                            "github",
                            "--tick",
                            TICK.isoformat(),
                        ],
                        env={**os.environ, "PYTHONPATH": str(src)},
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    for _ in range(3)
                ]
                reports = [
                    json.loads(p.communicate(timeout=300)[0].splitlines()[-1]) for p in three
                ]
                summed: dict[str, int] = {}
                for report in reports:
                    for key, value in report["outcomes"].items():
                        summed[key] = summed.get(key, 0) + value
                client = redis.Redis.from_url(REDIS_URL)
                queued = int(client.zcard(f"{fresh}:jobs:delayed")) + int(
                    client.xlen(f"{fresh}:jobs") if client.exists(f"{fresh}:jobs") else 0
                )
                client.close()
                result["three"] = {
                    "outcomes": summed,
                    "queued": queued,
                    "seconds": max(r["seconds"] for r in reports),
                }
                cleanup_redis(fresh)
            result["worker_rss"] = measure_worker(src, pg_url, namespace, 15)
        result["api"] = measure_api(src, pg_url, namespace, users, label)
        if label == "after":
            result["explain"] = run_child(src, 300, "--child", "explain", "--pg", pg_url)
    finally:
        cleanup_redis(namespace)
    return result


def upgrade(src: Path, pg_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "DATABASE_URL": pg_url}
    subprocess.run(
        [sys.executable, "-m", "ingestion.cli", "db", "upgrade"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


# --- report -------------------------------------------------------------------------------------


def _fmt_tick(tick: dict[str, Any] | None, timeout: float) -> str:
    if tick is None:
        return f"did not finish in {timeout:.0f} s"
    jobs = sum(tick["outcomes"].values())
    return f"{tick['seconds']:.2f} s ({jobs / tick['seconds']:,.0f} pairs/s; {tick['outcomes']})"


def report(
    results: list[dict[str, Any]], users: int, seeded: dict[str, float], timeout: float
) -> str:
    load = os.getloadavg()
    labels = [r["label"] for r in results]

    def cell(r: dict[str, Any], *path: str) -> str:
        value: Any = r
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return "-"
            value = value[key]
        if isinstance(value, list | tuple):
            return f"{value[0]} ms ({value[1]:,} bytes)"
        if isinstance(value, float):
            return f"{value:,.0f}"
        return str(value)

    rows: list[tuple[str, list[str]]] = [
        (
            "scheduler: one github tick, 100 % of accounts",
            [_fmt_tick(r.get("tick"), timeout) for r in results],
        ),
        (
            "scheduler: the next tick (all still queued)",
            [_fmt_tick(r.get("tick2"), timeout) for r in results],
        ),
        ("Redis bytes per queued job", [cell(r, "bytes_per_job") for r in results]),
        ("scheduler peak RSS, MiB", [cell(r, "tick", "peak_mib") for r in results]),
        ("GET /v1/status?limit=100, median", [cell(r, "api", "status_page") for r in results]),
        (
            "GET /v1/status next page (cursor), median",
            [cell(r, "api", "status_next") for r in results],
        ),
        (
            "GET /v1/status?status=reauth_required&provider=github, median",
            [cell(r, "api", "status_filtered") for r in results],
        ),
        (
            "GET /v1/status?limit=0 (aggregate only), median",
            [cell(r, "api", "aggregate") for r in results],
        ),
        ("GET / (status page), median", [cell(r, "api", "page") for r in results]),
        ("GET /?user=… (search), median", [cell(r, "api", "page_search") for r in results]),
        ("GET /metrics, median", [cell(r, "api", "metrics") for r in results]),
        ("GET /v1/accounts/{userId}, median", [cell(r, "api", "account") for r in results]),
        (
            "POST /v1/sync, 1,960 distinct pairs, 16 in flight, req/s",
            [cell(r, "api", "sync_rps") for r in results],
        ),
        (
            "POST /v1/sync, the same pairs again (coalesced), req/s",
            [cell(r, "api", "sync_rps_coalesced") for r in results],
        ),
        (
            "api process RSS now / peak, MiB",
            [
                f"{cell(r, 'api', 'rss', 'rss_mib')} / {cell(r, 'api', 'rss', 'peak_mib')}"
                for r in results
            ],
        ),
        (
            "worker process RSS now / peak after 15 s, MiB",
            [
                f"{cell(r, 'worker_rss', 'rss_mib')} / {cell(r, 'worker_rss', 'peak_mib')}"
                for r in results
            ],
        ),
    ]
    lines = [
        f"# Control plane at {users:,} users (PostgreSQL + Redis, this machine)",
        "",
        f"`uv run python bench/bench_scale.py --users {users}"
        + (" --before-src …`" if len(results) > 1 else "`")
        + f". Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work; "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end of the run. "
        f"Seeded {users:,} users, {users * 3:,} accounts, {users * 4:,} sync state rows in "
        f"{seeded['seconds']:.1f} s (COPY). Columns were measured in the same run on the same "
        "data, one after the other.",
        "",
        "| measure | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
        *(f"| {name} | " + " | ".join(values) + " |" for name, values in rows),
        "",
    ]
    after = results[-1]
    if "three" in after:
        three = after["three"]
        lines += [
            f"Three schedulers at once on one fresh tick: outcomes {three['outcomes']}, "
            f"{three['queued']:,} jobs queued (one per due user), slowest "
            f"{three['seconds']:.2f} s.",
            "",
        ]
    if after.get("explain"):
        lines += ["## Hot queries at this size (`EXPLAIN ANALYZE`, after)", ""]
        for name, plan in after["explain"].items():
            lines += [f"### {name}", "", "```", plan, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--before-src", type=Path, help="an older tree's src/ to measure first")
    parser.add_argument("--scheduler-timeout", type=float, default=240.0)
    parser.add_argument("--before-only", action="store_true", help="measure only --before-src")
    parser.add_argument(
        "--before-json",
        type=Path,
        help="a before tree's figures printed by an earlier run (its JSON line), for the report",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pg", help=argparse.SUPPRESS)
    parser.add_argument("--ns", help=argparse.SUPPRESS)
    parser.add_argument("--provider", help=argparse.SUPPRESS)
    parser.add_argument("--tick", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    database = f"bench_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    pg_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"
    trees = [("after", ROOT / "src")]
    if args.before_src:
        trees.insert(0, ("before", args.before_src.resolve()))
        if args.before_only:
            trees = trees[:1]
    results: list[dict[str, Any]] = []
    if args.before_json:
        results.append(json.loads(args.before_json.read_text()))
    try:
        upgrade(trees[0][1], pg_url)
        seeded = seed(pg_url, args.users)
        print(f"seeded in {seeded['seconds']:.1f} s", flush=True)
        for label, src in trees:
            upgrade(src, pg_url)
            result = measure_tree(src, label, pg_url, args.users, args.scheduler_timeout)
            print(json.dumps({k: v for k, v in result.items() if k != "explain"}), flush=True)
            results.append(result)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    text = report(results, args.users, seeded, args.scheduler_timeout)
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
