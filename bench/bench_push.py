"""Push latency: a change in an emulated provider to its record in the memory engine emulator.

    uv run python bench/bench_push.py [--changes N]

Real processes: `ingestion api` and `ingestion worker` (PostgreSQL in a fresh database, Redis
in a unique namespace), with Gmail push (Pub/Sub OIDC), Calendar channels and a GitHub webhook
configured. The emulators run in this process: Gmail publishes each history change to the
emulated Pub/Sub, which pushes a signed delivery to the API; the Calendar emulator notifies its
watch channel; the GitHub change is followed by a signed webhook delivery, as GitHub sends one.

For each provider, `--changes` changes one after another (each from an idle pair): the clock
starts when the emulator makes the change and stops when the memory engine emulator holds the
record. The cron-only figure beside it is what the default schedule (`*/15 * * * *` with
`SCHEDULE_JITTER_SECONDS` 30) gives a change at a uniformly random moment, plus the same sync
time: waiting for the next tick is uniform over 15 minutes, then up to 30 s of jitter.

Writes bench/results/push.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.emulators import calendar as calendar_emulator  # noqa: E402
from tests.emulators import github as github_emulator  # noqa: E402
from tests.emulators import gmail as gmail_emulator  # noqa: E402
from tests.emulators import memory_engine  # noqa: E402
from tests.emulators.gmail_corpus import generated_message  # noqa: E402
from tests.emulators.push import PubSub, PushSender, github_delivery  # noqa: E402
from tests.emulators.server import free_port, serve  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
USER = "bench"
GOOGLE_TOKEN = "ya29.bench-push"
GITHUB_TOKEN = "gho_benchpush"
TOPIC = "projects/bench/topics/gmail"
ACCOUNT = "gmail-push@bench.iam.gserviceaccount.com"
SECRET = "bench-webhook-secret-0123456789"
CALENDAR = "bench@example.com"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()

    database = f"bench_push_{uuid.uuid4().hex[:10]}"
    namespace = f"bench-push-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    pg_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"

    pubsub = PubSub()
    gmail = gmail_emulator.GmailState()
    gmail.add_user(USER, GOOGLE_TOKEN, "bench@example.com")
    gmail.publish = pubsub.publish
    sender = PushSender()
    calendar = calendar_emulator.CalendarState(tokens={GOOGLE_TOKEN: USER}, sender=sender)
    calendar.add_calendar(USER, CALENDAR, "Bench", primary=True)
    github = github_emulator.GitHubState(rate_limit=1_000_000)
    github.add_user("bench", token=GITHUB_TOKEN)
    repo = github.add_repo("bench", "app")
    engine = memory_engine.MemoryEngineState()
    servers = [
        serve(gmail_emulator.create_app(gmail)),
        serve(calendar_emulator.create_app(calendar)),
        serve(github_emulator.create_app(github)),
        serve(memory_engine.create_app(engine)),
        serve(pubsub.create_app()),
    ]
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    pubsub.subscribe(TOPIC, f"{api_url}/v1/push/gmail", audience=api_url, service_account=ACCOUNT)
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": namespace,
        "API_PORT": str(port),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="bench-push-prom-"),
        "GMAIL_API_URL": servers[0].url,
        "CALENDAR_API_URL": servers[1].url,
        "GITHUB_API_URL": servers[2].url,
        "MEMORY_ENGINE_URL": servers[3].url,
        "GOOGLE_OIDC_CERTS_URL": f"{servers[4].url}/oauth2/v1/certs",
        "GMAIL_PUBSUB_TOPIC": TOPIC,
        "GMAIL_PUSH_AUDIENCE": api_url,
        "GMAIL_PUSH_SERVICE_ACCOUNT": ACCOUNT,
        "PUBLIC_BASE_URL": api_url,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "CALENDAR_QUOTA_REQUESTS_PER_MINUTE": "60000",
        "GMAIL_QUOTA_UNITS_PER_MINUTE": "600000",
    }
    cli = [sys.executable, "-m", "ingestion.cli"]
    processes: list[subprocess.Popen[bytes]] = []
    rows: list[tuple[str, list[float]]] = []
    sync_times: list[float] = []
    store = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        for provider, token in (("gmail", GOOGLE_TOKEN), ("github", GITHUB_TOKEN)):
            subprocess.run(
                [*cli, "accounts", "add", provider, "--user", USER, "--access-token", token],
                env=env,
                check=True,
                capture_output=True,
            )
        processes.extend(
            subprocess.Popen(
                [*cli, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for command in (["api"], ["worker", "--concurrency", "4"])
        )
        http = httpx.Client(base_url=api_url, timeout=10)

        def ready() -> bool:
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait(ready, 120, "the API")

        def idle(provider: str) -> bool:
            return not store.exists(f"{namespace}:active:{provider}:{USER}")

        for provider in ("gmail", "calendar", "github"):  # first syncs set the channels up
            http.post("/v1/sync", json={"provider": provider, "userId": USER})
        wait(lambda: gmail.mailboxes[USER].watch is not None, 120, "the Gmail watch")
        wait(lambda: bool(calendar.channels), 120, "the Calendar channel")
        for provider in ("gmail", "calendar", "github"):
            wait(lambda p=provider: idle(p), 120, f"the first {provider} sync")
        sender.wait_idle()

        def has(record_id: str) -> bool:
            with engine.lock:
                return record_id in engine.records

        def measure(provider: str, change: Callable[[int], str]) -> list[float]:
            latencies: list[float] = []
            for n in range(args.changes):
                wait(lambda: idle(provider), 60, f"an idle {provider} pair")
                started = time.perf_counter()
                record_id = change(n)
                wait(lambda r=record_id: has(r), 60, f"{provider} change {n}")
                latencies.append(time.perf_counter() - started)
            return latencies

        def gmail_change(n: int) -> str:
            raw, when = generated_message(n, base=datetime.now(UTC))
            message_id = gmail.add_message(USER, raw, internal_date=when)
            return f"gmail:{USER}:{message_id}"

        def calendar_change(n: int) -> str:
            event = calendar.insert_event(
                CALENDAR,
                summary=f"Bench event {n}",
                start={"dateTime": "2026-12-15T09:00:00Z"},
                end={"dateTime": "2026-12-15T09:30:00Z"},
            )
            return f"calendar:{USER}:{CALENDAR}/{event['id']}"

        def github_change(n: int) -> str:
            issue = github.add_issue(repo, f"Bench issue {n}", user="bench")
            payload = {
                "action": "opened",
                "issue": {"number": issue.number, "title": issue.title},
                "repository": {"full_name": repo.full_name},
                "sender": {"login": "bench"},
            }
            headers, body = github_delivery("issues", payload, SECRET)
            http.post("/v1/push/github", content=body, headers=headers).raise_for_status()
            return f"github:{USER}:{repo.full_name}#{issue.number}"

        for provider, change in (
            ("gmail", gmail_change),
            ("calendar", calendar_change),
            ("github", github_change),
        ):
            rows.append((provider, measure(provider, change)))
        with psycopg.connect(pg_url) as conn:
            durations = conn.execute(
                "SELECT provider, EXTRACT(EPOCH FROM finished_at - started_at) "
                "FROM ingestion_sync_runs WHERE status = 'ok'"
            ).fetchall()
        sync_times = [float(d) for _, d in durations]
        http.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        keys = list(store.scan_iter(match=f"{namespace}*"))
        if keys:
            store.delete(*keys)
        store.close()
        for server in servers:
            server.stop()
        pubsub.sender.close()
        sender.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    median_sync = statistics.median(sync_times) if sync_times else 0.0
    cron_p50 = 0.5 * 900 + 0.5 * 30 + median_sync
    cron_p95 = 0.95 * 900 + 30 + median_sync
    load = os.getloadavg()[0]
    lines = [
        f"# Push latency ({args.changes} changes per provider, api + worker processes, "
        "PostgreSQL + Redis)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} "
        "when measured (other work was running).",
        "",
        "Change in the emulator → record in the memory engine emulator, one change at a time. "
        "Cron only: the default `*/15 * * * *` schedule with 30 s of jitter, a change at a "
        f"random moment, plus the median sync time measured here ({median_sync * 1000:.0f} ms).",
        "",
        "| provider | push p50 | push p95 | push max | cron only p50 | cron only p95 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {statistics.median(v):.2f} s | {percentile(v, 0.95):.2f} s | "
            f"{max(v):.2f} s | {cron_p50 / 60:.1f} min | {cron_p95 / 60:.1f} min |"
            for name, v in rows
        ),
        "",
        "Goal: p95 ≤ 5 s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (ROOT / "bench" / "results" / "push.md").write_text(text)


if __name__ == "__main__":
    main()
