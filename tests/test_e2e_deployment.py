"""The whole deployment shape, end to end, with one worker SIGKILLed mid-run.

Real processes: `ingestion api`, one `ingestion scheduler`, two `ingestion worker`s, sharing
PostgreSQL, Redis (a unique namespace) and a Prometheus multiprocess directory. In this test
process: the Gmail, Calendar, GitHub and X emulators, the OAuth token endpoints and the memory
engine emulator, all on loopback.

Three users have accounts on every provider. Gmail, Calendar and GitHub are synced by the
scheduler's ticks (a seconds-level cron); X only on demand, through `POST /v1/sync` (its X
tokens have expired, so each of those syncs refreshes first). The worker running the big
mailbox is SIGKILLed while that sync is half done; the other worker reclaims the job after the
visibility timeout and resumes from the last stored cursor.

What must hold afterwards: every seeded item is in the memory engine under its stable id, no
unexpected ids, each upserted once except at most the one page in flight at the kill (resent
once when the kill fell between the engine's 2xx and the cursor commit), every (user, provider) is
`ok`, nothing is pending or dead, the metrics of all processes (the killed one included) count
what happened, and the status page shows it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from ingestion.config import Settings
from ingestion.queue import Keys
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.db import upgrade
from tests.conftest import announced_port_in_file
from tests.emulators import calendar as calendar_emulator
from tests.emulators import github as github_emulator
from tests.emulators import gmail as gmail_emulator
from tests.emulators import memory_engine, oauth, twitter
from tests.emulators.gmail_corpus import generated_message
from tests.emulators.server import RunningServer, serve
from tests.queue_helpers import log_lines, spawn, stop_process, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(420)]

USERS = ("alice", "bob", "carol")
BIG = "alice"  # the mailbox whose sync is killed half way
BIG_MAILBOX = 100
GMAIL_PAGE = 20
SMALL_MAILBOX = 12
API_KEY = "e2e-api-key-of-at-least-32-characters"
X_IDS = {"alice": "101", "bob": "102", "carol": "103"}
X_SCOPE = "tweet.read users.read like.read offline.access"
CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@dataclass
class World:
    """The emulators, their servers, and the memory record ids each user must end up with."""

    gmail: gmail_emulator.GmailState = field(default_factory=gmail_emulator.GmailState)
    calendar: calendar_emulator.CalendarState = field(
        default_factory=calendar_emulator.CalendarState
    )
    github: github_emulator.GitHubState = field(default_factory=github_emulator.GitHubState)
    x: twitter.TwitterState = field(default_factory=twitter.TwitterState)
    oauth: oauth.OAuthState = field(default_factory=oauth.OAuthState)
    engine: memory_engine.MemoryEngineState = field(default_factory=memory_engine.MemoryEngineState)
    servers: dict[str, RunningServer] = field(default_factory=dict)
    expected: dict[str, set[str]] = field(default_factory=dict)
    google_tokens: dict[str, str] = field(default_factory=dict)
    github_tokens: dict[str, str] = field(default_factory=dict)
    x_grants: dict[str, oauth.Grant] = field(default_factory=dict)

    def expect(self, source: str, user: str, source_id: str) -> None:
        self.expected.setdefault(user, set()).add(f"{source}:{user}:{source_id}")

    def all_expected(self) -> set[str]:
        return set().union(*self.expected.values())


def seed(world: World) -> None:
    now = datetime.now(UTC)
    world.github.add_user("octocat")
    for n, user in enumerate(USERS):
        google = f"ya29.{user}"
        world.google_tokens[user] = google
        # Gmail: a big mailbox for one user, small ones for the others.
        world.gmail.add_user(user, google, f"{user}@example.com")
        size = BIG_MAILBOX if user == BIG else SMALL_MAILBOX
        for index in range(size):
            raw, when = generated_message(n * 1000 + index, base=now)
            message_id = world.gmail.add_message(user, raw, internal_date=when)
            world.expect("gmail", user, message_id)
        # Calendar: the primary calendar with a few events around now.
        world.calendar.tokens[google] = user
        calendar_id = f"{user}@example.com"
        world.calendar.add_calendar(user, calendar_id, user.title(), primary=True)
        for day in range(5):
            start = (now + timedelta(days=day - 2)).replace(microsecond=0)
            event = world.calendar.insert_event(
                calendar_id,
                summary=f"{user} meeting {day}",
                start={"dateTime": start.isoformat().replace("+00:00", "Z")},
                end={"dateTime": (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")},
            )
            world.expect("calendar", user, f"{calendar_id}/{event['id']}")
        # GitHub: two repositories with commits, issues and pull requests.
        token = f"gho_{user}"
        world.github_tokens[user] = token
        world.github.add_user(user, token=token)
        for repo in github_emulator.seed_activity(
            world.github,
            user,
            repos=2,
            commits_per_repo=6,
            issues_per_repo=5,
            org=f"{user}-org",
            start=now - timedelta(days=30),
        ):
            for commit in repo.commits:
                world.expect("github", user, f"{repo.full_name}@{commit.sha}")
            for number, issue in repo.issues.items():
                # Organisation issues only where the person takes part (GITHUB_ISSUES_FILTER).
                if repo.owner == user or user in (issue.user, *issue.assignees):
                    world.expect("github", user, f"{repo.full_name}#{number}")
        # X: own posts; the stored access token has expired, so the sync refreshes it first.
        world.x.add_user(X_IDS[user], user)
        for i in range(15):
            tweet = world.x.add_tweet(
                X_IDS[user], f"{user} post {i}", created_at=now - timedelta(hours=i + 1)
            )
            world.expect("twitter", user, tweet)
        grant = world.oauth.issue("twitter", user, X_SCOPE)
        world.x_grants[user] = grant
        world.x.tokens[grant.access_token] = X_IDS[user]

    def link(new_access: str, old_access: str | None) -> None:
        owner = world.x.tokens.pop(old_access, None) if old_access else None
        if owner is not None:
            world.x.tokens[new_access] = owner

    world.oauth.on_token = link


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    seed(w)
    w.servers = {
        "gmail": serve(gmail_emulator.create_app(w.gmail)),
        "calendar": serve(calendar_emulator.create_app(w.calendar)),
        "github": serve(github_emulator.create_app(w.github)),
        "x": serve(twitter.create_app(w.x)),
        "oauth": serve(oauth.create_app(w.oauth)),
        "engine": serve(memory_engine.create_app(w.engine)),
    }
    yield w
    w.oauth.release()
    for server in w.servers.values():
        server.stop()


async def store_accounts(settings: Settings, world: World) -> None:
    await asyncio.to_thread(upgrade, settings)
    services = await Services.open(settings, migrate=False)
    expired = datetime.now(UTC) - timedelta(minutes=5)
    try:
        async with services.db.session() as session:
            for user in USERS:
                await save_account(
                    session,
                    user_id=user,
                    provider_id="google",
                    access_token=world.google_tokens[user],
                )
                await save_account(
                    session,
                    user_id=user,
                    provider_id="github",
                    access_token=world.github_tokens[user],
                )
                grant = world.x_grants[user]
                await save_account(
                    session,
                    user_id=user,
                    provider_id="twitter",
                    account_id=X_IDS[user],
                    access_token=grant.access_token,
                    refresh_token=grant.refresh_token,
                    expires_at=expired,
                    scope=X_SCOPE,
                )
    finally:
        await services.aclose()


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of `name` whose labels include `labels`."""
    values = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(match.group(2)))
    return values


async def test_deployment_survives_a_killed_worker_and_syncs_everything_once(
    world: World,
    pg_url: str,
    redis_url: str,
    namespace: str,
    base_env: dict[str, str],
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=pg_url, redis_url=redis_url, redis_namespace=namespace)
    await store_accounts(settings, world)
    prometheus = tmp_path / "prometheus"
    prometheus.mkdir()
    servers = world.servers
    env = {
        **base_env,
        **world.oauth.settings_env(servers["oauth"].url),
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": namespace,
        "MEMORY_ENGINE_URL": servers["engine"].url,
        "GMAIL_API_URL": servers["gmail"].url,
        "CALENDAR_API_URL": servers["calendar"].url,
        "GITHUB_API_URL": servers["github"].url,
        "TWITTER_API_URL": f"{servers['x'].url}/2",
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
        "INGESTION_API_KEY": API_KEY,
        "API_PORT": "0",  # any free port; the API's "api listening" line names it
        # Scheduled: a tick every 10 seconds (seconds-level cron); X only on demand.
        "GMAIL_SYNC_CRON": "* * * * * */10",
        "CALENDAR_SYNC_CRON": "* * * * * */10",
        "GITHUB_SYNC_CRON": "* * * * * */10",
        "TWITTER_SYNC_CRON": "0 0 1 1 *",
        "SCHEDULE_JITTER_SECONDS": "0",
        "JOB_VISIBILITY_TIMEOUT": "3",
        "WORKER_CONCURRENCY": "1",  # the killed worker runs the big mailbox alone
        # Pace the big mailbox so that its sync is still running when its worker is killed.
        "GMAIL_QUOTA_UNITS_PER_MINUTE": "2400",
        "GMAIL_PAGE_SIZE": str(GMAIL_PAGE),
        "GITHUB_RATE_LIMIT_RESERVE": "0",
        "TWITTER_RATE_LIMIT_RESERVE": "0",
        "LOG_FORMAT": "json",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "scheduler", "w1", "w2")}
    processes: dict[str, subprocess.Popen[bytes]] = {
        "api": spawn(["api"], env, logs["api"]),
        "w1": spawn(["worker"], env, logs["w1"]),
        "w2": spawn(["worker"], env, logs["w2"]),
        "scheduler": spawn(["scheduler"], env, logs["scheduler"]),
    }
    redis = Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(namespace)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        port = await asyncio.to_thread(announced_port_in_file, logs["api"], processes["api"], 150)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:

            async def api_up() -> bool:
                for name, proc in processes.items():
                    assert proc.poll() is None, f"{name} exited: {logs[name].read_text()[-2000:]}"
                try:
                    return (await api.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(api_up, timeout=120, interval=0.2)

            # On demand: X for every user, through the API (with the key).
            for user in USERS:
                answer = await api.post(
                    "/v1/sync", json={"provider": "twitter", "userId": user}, headers=auth
                )
                assert answer.status_code == 202, answer.text
            assert (await api.post("/v1/sync", json={})).status_code == 401

            # The scheduler's tick starts the big mailbox; kill its worker half way, at a moment
            # when every page the engine accepted is also checkpointed (the worker is fetching
            # the next page). A kill between the engine's answer and the checkpoint would make
            # the next run resend that one page: at-least-once, harmless to an upsert by id,
            # but then the engine's per-id count would be 2 for that page.
            big_prefix = f"gmail:{BIG}:"

            def big_synced() -> int:
                return sum(1 for i in world.engine.ids(BIG) if i.startswith(big_prefix))

            async def big_half_done() -> bool:
                in_engine = big_synced()
                if not 2 * 20 <= in_engine < BIG_MAILBOX - 40:
                    return False
                answer = await api.get(f"/v1/accounts/{BIG}", headers=auth)
                gmail = next(r for r in answer.json()["providers"] if r["provider"] == "gmail")
                return bool(gmail["itemsUpserted"] == in_engine == big_synced())

            await wait_for(big_half_done, timeout=120, interval=0.02)
            holder = None
            for entry in await redis.xpending_range(keys.stream, keys.group, "-", "+", 100):
                [(_, fields)] = await redis.xrange(
                    keys.stream, entry["message_id"], entry["message_id"]
                )
                if fields["type"] == "gmail:fetch" and f'"{BIG}"' in fields["payload"]:
                    holder = int(entry["consumer"].split("-")[-2])
            assert holder is not None, "the big mailbox's job is not pending on any worker"
            victim = next(name for name in ("w1", "w2") if processes[name].pid == holder)
            survivor = "w2" if victim == "w1" else "w1"
            processes[victim].send_signal(signal.SIGKILL)
            assert processes[victim].wait(timeout=10) == -signal.SIGKILL
            synced_at_kill = big_synced()
            assert synced_at_kill < BIG_MAILBOX

            # Everything arrives: the survivor reclaims the job and resumes from the cursor.
            expected = world.all_expected()

            async def all_in_engine() -> bool:
                return world.engine.ids() >= expected

            await wait_for(all_in_engine, timeout=180, interval=0.2)
            # No more ticks from here; let the last jobs finish.
            assert stop_process(processes["scheduler"]) == 0

            async def settled() -> dict[str, Any] | None:
                status = (await api.get("/v1/status", headers=auth)).json()
                queue = status["queue"]
                busy = queue["length"] or queue["pending"] or queue["delayed"]
                rows = status["accounts"]
                if busy or any(r["status"] != "ok" for r in rows):
                    return None
                return dict(status)

            status = await wait_for(settled, timeout=60, interval=0.2)

            # Every seeded item, nothing else, under stable ids. Only the killed job may have
            # resent anything: at most the page in flight at the kill (a kill between the
            # engine's 2xx and the cursor commit), each of its items at most twice.
            assert world.engine.ids() == expected
            repeated = {i: n for i, n in world.engine.upserts.items() if n != 1}
            assert all(i.startswith(big_prefix) for i in repeated), sorted(repeated)[:5]
            assert len(repeated) <= GMAIL_PAGE, f"more than one page resent: {len(repeated)}"
            assert set(repeated.values()) <= {2}, repeated
            for user in USERS:
                assert world.engine.ids(user) == world.expected[user]

            # Every (user, provider) ok, nothing pending or dead.
            rows = {(r["userId"], r["provider"]): r for r in status["accounts"]}
            assert set(rows) == {(u, p) for u in USERS for p in PROVIDERS}
            for (user, provider), row in rows.items():
                assert row["status"] == "ok", (user, provider, row["lastError"])
                assert row["lastSyncTime"] is not None
                prefix = f"{provider}:{user}:"
                wanted = sum(1 for i in world.expected[user] if i.startswith(prefix))
                assert row["itemsUpserted"] >= wanted, (user, provider)
            assert status["queue"]["deadLetters"] == 0
            assert await redis.xlen(keys.dead) == 0

            # The survivor took over the killed worker's job.
            events = [line.get("event") for line in log_lines(logs[survivor])]
            assert "reclaimed stalled jobs" in events

            # Metrics of every process, the killed worker's included.
            text = (await api.get("/metrics")).text
            total = len(expected)
            upserted = sum(metric_values(text, "ingestion_items_total", action="upserted"))
            fetched = sum(metric_values(text, "ingestion_items_total", action="fetched"))
            assert 0 < upserted <= total
            assert fetched >= total
            for provider in PROVIDERS:
                ok = metric_values(
                    text, "ingestion_jobs_total", provider=provider, outcome="succeeded"
                )
                assert sum(ok) >= len(USERS), provider
                assert metric_values(
                    text, "ingestion_api_requests_total", provider=provider, status="200"
                ), provider
                assert metric_values(
                    text, "ingestion_cursor_age_seconds", provider=provider, stat="max"
                ), provider
            assert sum(
                metric_values(text, "ingestion_token_refreshes_total", provider="twitter")
            ) >= len(USERS)
            assert metric_values(text, "ingestion_queue", figure="dead_letters") == [0.0]
            assert metric_values(text, "ingestion_queue", figure="pending") == [0.0]
            assert sum(
                metric_values(text, "ingestion_sync_duration_seconds_count", status="ok")
            ) >= len(USERS) * len(PROVIDERS)

            # The status page shows it (to the key's holder).
            page = (await api.get("/", headers=auth)).text
            for user in USERS:
                for provider in PROVIDERS:
                    assert f'data-user="{user}" data-provider="{provider}"' in page
            assert page.count('<span class="badge s-ok">ok</span>') >= len(USERS) * len(PROVIDERS)
            assert "s-error" not in page
            (tmp_path / "status.json").write_text(json.dumps(status, indent=2))
            if HAVE_CHROMIUM:  # a picture for people; the assertions above do not need it
                await screenshot(url, ARTIFACTS / "e2e-status-page.png")
    finally:
        for name, proc in processes.items():
            stop_process(proc, signal.SIGKILL if name == "scheduler" else signal.SIGTERM)
        await redis.aclose()


PROVIDERS = ("gmail", "calendar", "github", "twitter")


async def screenshot(url: str, path: Path) -> None:
    """The status page after the run, as a person sees it (a test artifact)."""
    from playwright.async_api import async_playwright

    path.parent.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(url)
            await page.fill("#api-key", API_KEY)
            await page.click("#key-form button[type=submit]")
            await page.wait_for_selector("#accounts")
            await page.screenshot(path=str(path), full_page=True)
        finally:
            await browser.close()
