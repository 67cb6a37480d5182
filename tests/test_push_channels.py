"""Push channels end to end: watches made after a sync, notifications through a real API
server into the Redis queue, renewal and expiry fallback on an injectable clock, channels
stopped when a calendar leaves the list or the account is removed.

Gmail, Calendar, the memory engine and Pub/Sub are the emulators; the API runs in uvicorn on
loopback and the emulated senders post to it over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ingestion.api import create_app, serve
from ingestion.clock import SystemClock
from ingestion.config import Settings
from ingestion.push.store import ChannelStore
from ingestion.queue import Keys, RedisJobQueue
from ingestion.scheduler import Scheduler
from ingestion.services import Services
from ingestion.status import gather_status
from ingestion.storage.accounts import save_account
from tests.emulators import calendar as calendar_emulator
from tests.emulators import gmail as gmail_emulator
from tests.emulators import memory_engine
from tests.emulators.calendar import CalendarState
from tests.emulators.gmail import GmailState
from tests.emulators.gmail_corpus import generated_message
from tests.emulators.memory_engine import MemoryEngineState
from tests.emulators.push import PubSub, PushSender
from tests.emulators.server import RunningServer, free_port
from tests.emulators.server import serve as serve_thread

USER = "u1"
TOKEN = "ya29.push-test-token"
TOPIC = "projects/emulated/topics/gmail"
AUDIENCE = "https://ingest.example.com/v1/push/gmail"
ACCOUNT = "gmail-push@emulated.iam.gserviceaccount.com"


class ShiftedClock(SystemClock):
    """Wall time plus `offset`: a test jumps hours and days ahead."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class World:
    gmail: GmailState
    calendar: CalendarState
    pubsub: PubSub
    calendar_sender: PushSender
    services: Services
    queue: RedisJobQueue
    clock: ShiftedClock
    redis: aioredis.Redis
    keys: Keys
    api_url: str

    async def jobs(self) -> list[tuple[str, str]]:
        entries = await self.redis.xrange(self.keys.stream)
        return [(f["type"], json.loads(f["payload"])["userId"]) for _, f in entries]

    async def wait_for_jobs(self, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            jobs = await self.jobs()
            if len(jobs) >= count:
                return jobs
            await asyncio.sleep(0.05)
        return await self.jobs()

    async def drain(self) -> None:
        """Empty the queue as if a worker had run the jobs (coalescing markers included)."""
        for key in [k async for k in self.redis.scan_iter(match=f"{self.keys.namespace}:*")]:
            if ":push:seen:" not in key:  # the queue's keys, not the delivery ids seen
                await self.redis.delete(key)

    def watch_calls(self) -> int:
        with self.gmail.lock:
            return sum(1 for r in self.gmail.requests if r.endpoint == "watch")


@pytest.fixture
async def world(tmp_path: Path, redis_url: str, namespace: str) -> AsyncIterator[World]:
    pubsub = PubSub()
    gmail = GmailState()
    gmail.add_user(USER, TOKEN, "Mona.Lisa@example.com")
    gmail.publish = pubsub.publish
    sender = PushSender()
    calendar = CalendarState(tokens={TOKEN: USER}, sender=sender)
    engine = MemoryEngineState()
    threads: list[RunningServer] = [
        serve_thread(gmail_emulator.create_app(gmail)),
        serve_thread(calendar_emulator.create_app(calendar)),
        serve_thread(memory_engine.create_app(engine)),
        serve_thread(pubsub.create_app()),
    ]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'push.db'}",
        redis_url=redis_url,
        redis_namespace=namespace,
        gmail_api_url=threads[0].url,
        calendar_api_url=threads[1].url,
        calendar_quota_requests_per_minute=60_000,
        memory_engine_url=threads[2].url,
        google_oidc_certs_url=f"{threads[3].url}/oauth2/v1/certs",
        gmail_pubsub_topic=TOPIC,
        gmail_push_audience=AUDIENCE,
        gmail_push_service_account=ACCOUNT,
        public_base_url=base,
    )
    pubsub.subscribe(TOPIC, f"{base}/v1/push/gmail", audience=AUDIENCE, service_account=ACCOUNT)
    clock = ShiftedClock()
    services = await Services.open(settings, migrate=True, clock=clock)
    async with services.db.session() as session:
        await save_account(session, user_id=USER, provider_id="google", access_token=TOKEN)
    queue = RedisJobQueue(settings)
    stop = asyncio.Event()
    api = asyncio.create_task(serve(create_app(services, queue), "127.0.0.1", port, stop))
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield World(
            gmail, calendar, pubsub, sender, services, queue, clock, redis, Keys(namespace), base
        )
    finally:
        stop.set()
        await api
        await redis.aclose()
        await queue.aclose()
        await services.aclose()
        pubsub.sender.close()
        sender.close()
        for thread in threads:
            thread.stop()


def add_mail(world: World, index: int, **kwargs: Any) -> str:
    raw, when = generated_message(index, base=datetime.now(UTC))
    return world.gmail.add_message(USER, raw, internal_date=when, **kwargs)


async def test_gmail_watch_after_the_first_sync_and_a_new_message_enqueues_one_sync(
    world: World,
) -> None:
    add_mail(world, 1)
    await world.services.engine.run("gmail", USER)
    watch = world.gmail.mailboxes[USER].watch
    assert watch is not None
    assert (watch["topicName"], watch["labelIds"], watch["behavior"]) == (
        TOPIC,
        ["SPAM", "TRASH"],
        "exclude",
    )
    [channel] = await ChannelStore(world.services.db).of_user("gmail", USER)
    assert channel.resource == "mona.lisa@example.com"  # from getProfile, lower case
    document = await gather_status(world.services.db)
    assert {r["provider"]: r["push"] for r in document["accounts"]} == {
        "calendar": "off",
        "gmail": "active",
    }
    async with httpx.AsyncClient(base_url=world.api_url) as http:
        page = (await http.get("/")).text
        status = (await http.get("/v1/status")).json()
    assert "push: active" in page
    assert "push: off" in page
    assert {r["provider"]: r["push"] for r in status["accounts"]}["gmail"] == "active"
    assert await world.jobs() == []

    add_mail(world, 2)  # Gmail publishes, Pub/Sub pushes to the API, the API enqueues
    assert await world.wait_for_jobs(1) == [("gmail:fetch", USER)]
    add_mail(world, 3)
    assert await asyncio.to_thread(world.pubsub.sender.wait_idle)
    assert await world.jobs() == [("gmail:fetch", USER)]  # coalesced with the queued one
    assert set(world.pubsub.sender.statuses()) == {204}


async def test_gmail_watch_renewal_and_fallback_to_cron_follow_the_clock(world: World) -> None:
    db = world.services.db
    scheduler = Scheduler(world.services.settings, world.queue, db, clock=world.clock)
    await world.services.engine.run("gmail", USER)
    assert world.watch_calls() == 1
    # Push active and just synced: the scheduler leaves the account alone (stretched polling).
    assert await scheduler.due_users("gmail") == []

    world.clock.offset = timedelta(hours=1)
    await world.services.engine.run("gmail", USER)
    assert world.watch_calls() == 1  # young watch: not renewed on every sync

    world.clock.offset = timedelta(hours=7)  # past PUSH_POLL_INTERVAL since the last sync
    assert await scheduler.due_users("gmail") == [USER]

    world.clock.offset = timedelta(hours=19)  # older than a day minus the poll interval
    await world.services.engine.run("gmail", USER)
    assert world.watch_calls() == 2  # renewed
    [channel] = await ChannelStore(db).of_user("gmail", USER)
    assert abs(channel.renewed_at - world.clock.now()) < timedelta(minutes=1)

    # Nothing renews it for 8 days: expired, and the pair is back on the cron schedule.
    world.clock.offset = timedelta(days=8)
    statuses = await ChannelStore(db).statuses(world.clock.now())
    assert statuses[(USER, "gmail")] == "expired"
    assert await scheduler.due_users("gmail") == [USER]


async def test_a_failing_renewal_puts_the_account_back_on_the_cron_schedule(world: World) -> None:
    db = world.services.db
    scheduler = Scheduler(world.services.settings, world.queue, db, clock=world.clock)
    await world.services.engine.run("gmail", USER)
    world.clock.offset = timedelta(hours=19)
    world.gmail.inject(403, {"error": {"code": 403, "message": "no"}}, path_contains="/watch")
    summary = await world.services.engine.run("gmail", USER)
    assert summary.status == "ok"  # the sync itself is not failed by its channel
    statuses = await ChannelStore(db).statuses(world.clock.now())
    assert statuses[(USER, "gmail")] == "expired"
    assert await scheduler.due_users("gmail") == [USER]  # just synced, polled all the same


async def test_calendar_channels_follow_the_list_renew_and_notify(world: World) -> None:
    cal = world.calendar
    cal.add_calendar(USER, "mona@example.com", "Me", primary=True)
    cal.add_calendar(USER, "team@example.com", "Team", access_role="reader")
    await world.services.engine.run("calendar", USER)
    assert sorted(c["calendarId"] for c in cal.channels.values()) == [
        "mona@example.com",
        "team@example.com",
    ]
    assert await asyncio.to_thread(world.calendar_sender.wait_idle)
    assert set(world.calendar_sender.statuses()) == {200}  # both `sync` messages acknowledged
    assert await world.jobs() == []

    cal.insert_event(
        "team@example.com",
        summary="Standup",
        start={"dateTime": "2026-12-01T09:00:00Z"},
        end={"dateTime": "2026-12-01T09:15:00Z"},
    )
    assert await world.wait_for_jobs(1) == [("calendar:fetch", USER)]

    cal.unsubscribe(USER, "team@example.com")
    await world.drain()
    await world.services.engine.run("calendar", USER)
    assert [c["calendarId"] for c in cal.channels.values()] == ["mona@example.com"]
    rows = await ChannelStore(world.services.db).of_user("calendar", USER)
    assert [r.resource for r in rows] == ["mona@example.com"]
    before = set(cal.channels)

    world.clock.offset = timedelta(days=6, hours=1)  # expires within a day + poll interval
    await world.services.engine.run("calendar", USER)
    assert len(cal.channels) == 1
    assert set(cal.channels) != before  # a new channel, the old one stopped at Google
    rows = await ChannelStore(world.services.db).of_user("calendar", USER)
    assert {r.channel_id for r in rows} == set(cal.channels)


async def test_removal_stops_every_channel(world: World) -> None:
    world.calendar.add_calendar(USER, "mona@example.com", "Me", primary=True)
    await world.services.engine.run("gmail", USER)
    await world.services.engine.run("calendar", USER)
    assert world.gmail.mailboxes[USER].watch is not None
    assert len(world.calendar.channels) == 1

    assert await world.services.push.stop(USER, "gmail") == 1
    assert await world.services.push.stop(USER, "calendar") == 1
    assert world.gmail.mailboxes[USER].watch is None  # users.stop
    assert world.calendar.channels == {}  # channels.stop
    statuses = await ChannelStore(world.services.db).statuses(datetime.now(UTC))
    assert statuses == {}
    add_mail(world, 9)
    assert await asyncio.to_thread(world.pubsub.sender.wait_idle)
    assert await world.jobs() == []
