"""The X provider end to end, in process: sync engine + embedded store + the X emulator.

Each test drives `Services.open(...).engine.run("twitter", …)` against `tests/emulators/twitter.py`
and checks what reached the store, what the stored cursor says and what the emulator was asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stamina
from prometheus_client import REGISTRY
from sqlalchemy import select

from ingestion.clock import SystemClock
from ingestion.config import Settings
from ingestion.errors import QuotaExhausted, RateLimited
from ingestion.providers.base import FetchOptions
from ingestion.providers.twitter.client import usage_cap_reset
from ingestion.retry_after import MAX_WAIT_SECONDS
from ingestion.services import Services
from ingestion.status import gather_status
from ingestion.storage.accounts import save_account
from ingestion.storage.models import MemoryRow
from ingestion.storage.state import SyncStateStore
from ingestion.sync import SyncEngine, SyncSummary
from ingestion.web import render_status_page
from tests.emulators.server import RunningServer, serve
from tests.emulators.twitter import TwitterState, create_app, days_ago

ME, BOB, CAROL = "100", "200", "300"
TOKEN = "x-access-token-alice"


class Harness:
    def __init__(self, state: TwitterState, server: RunningServer, tmp_path: Path) -> None:
        self.state = state
        self.server = server
        self.db_url = f"sqlite:///{tmp_path / 'ingestion.db'}"
        self._services: Services | None = None

    async def services(self) -> Services:
        if self._services is None:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=self.db_url,
                twitter_api_url=f"{self.server.url}/2",
            )
            self._services = await Services.open(settings)
            async with self._services.db.session() as session:
                await save_account(session, user_id="u1", provider_id="twitter", access_token=TOKEN)
        return self._services

    async def run(self, options: FetchOptions | None = None, **overrides: Any) -> SyncSummary:
        """One sync; `overrides` are settings for this run only (same database and store)."""
        services = await self.services()
        engine = services.engine
        if overrides:
            settings = services.settings.model_copy(update=overrides)
            engine = SyncEngine(
                settings=settings,
                db=services.db,
                sink=services.sink,
                tokens=services.tokens,
                http=services.http,
                clock=services.clock,
            )
        return await engine.run("twitter", "u1", options)

    async def records(self) -> dict[str, MemoryRow]:
        services = await self.services()
        async with services.db.session() as session:
            rows = (await session.execute(select(MemoryRow))).scalars().all()
        return {row.source_id: row for row in rows}

    async def cursor(self) -> dict[str, Any]:
        services = await self.services()
        return dict((await SyncStateStore(services.db).load("u1", "twitter")).cursor)

    async def aclose(self) -> None:
        if self._services is not None:
            await self._services.aclose()


@pytest.fixture
def x_state() -> TwitterState:
    state = TwitterState()
    state.add_user(ME, "alice")
    state.add_user(BOB, "bob")
    state.add_user(CAROL, "carol")
    state.tokens[TOKEN] = ME
    return state


@pytest.fixture
def x_server(x_state: TwitterState) -> Iterator[RunningServer]:
    server = serve(create_app(x_state))
    yield server
    server.stop()


@pytest.fixture
async def harness(
    x_state: TwitterState, x_server: RunningServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    h = Harness(x_state, x_server, tmp_path)
    yield h
    await h.aclose()


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


def own_posts(state: TwitterState, count: int, *, hours_apart: float = 1.0) -> list[str]:
    """`count` posts by alice, oldest first, spaced back from now."""
    return [
        state.add_tweet(ME, f"post number {i}", created_at=days_ago((count - i) * hours_apart / 24))
        for i in range(count)
    ]


async def test_full_sync_of_three_timelines_with_pagination_and_media(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    s.add_tweet(ME, "too old for the backfill window", created_at=days_ago(400))
    bob_original = s.add_tweet(
        BOB, "original thought by bob that alice retweets", created_at=days_ago(3)
    )
    own = own_posts(s, 127)
    photo = s.add_tweet(ME, "look at this", media=[("photo", "https://pbs.twimg.com/media/a.jpg")])
    video = s.add_tweet(ME, "a clip", media=[("video", "https://pbs.twimg.com/vid/thumb.jpg")])
    long_post = s.add_tweet(
        ME,
        "A long one that X cuts here… https://t.co/cut",
        urls=[("https://t.co/cut", "https://x.com/i/article/1")],
        note_text="A long one " + "word " * 80 + "with a link https://t.co/abc & more",
    )
    s.tweets[long_post]["note_tweet"]["entities"] = {
        "urls": [{"url": "https://t.co/abc", "expanded_url": "https://example.com/long"}]
    }
    linked = s.add_tweet(
        ME,
        "read https://t.co/xyz <now> & later",
        urls=[("https://t.co/xyz", "https://example.com/a")],
    )
    retweet = s.add_tweet(
        ME, "RT @bob: original thought by bob that…", referenced=[("retweeted", bob_original)]
    )
    mentions = [
        s.add_tweet(BOB, f"@alice hello {i}", mentions=[ME], created_at=days_ago(i / 24))
        for i in range(105)
    ]
    likes = [s.add_tweet(CAROL, f"carol says {i}") for i in range(108)]
    for tweet_id in likes:
        s.like(ME, tweet_id)
    s.like(ME, own[0])  # liked own post: stays kind "tweet"
    s.like(ME, mentions[0])  # liked mention: stays kind "mention"

    summary = await harness.run()

    records = await harness.records()
    own_ids = {*own, photo, video, long_post, linked, retweet}
    assert summary.status == "ok"
    assert set(records) == own_ids | set(mentions) | set(likes)
    assert summary.upserted == len(own_ids) + len(mentions) + len(likes) + 2  # two seen twice
    kinds = Counter(row.meta["kind"] for row in records.values())
    assert kinds == {"tweet": len(own_ids), "mention": 105, "like": 108}
    assert records[own[0]].meta["kind"] == "tweet"
    assert records[mentions[0]].meta["kind"] == "mention"
    # pages of 100: /users/me once, two pages of each timeline
    assert [r.endpoint for r in s.log] == [
        "me",
        "tweets",
        "tweets",
        "mentions",
        "mentions",
        "likes",
        "likes",
    ]
    assert summary.stats["requests"] == 7
    first = s.log[1].params
    assert first["max_results"] == "100"
    assert "start_time" in first
    assert "since_id" not in first
    assert "note_tweet" in first["tweet.fields"]
    assert s.log[2].params["pagination_token"]

    row = records[photo]
    assert row.type == "tweet"
    assert row.title is None
    assert row.url == f"https://x.com/alice/status/{photo}"
    assert row.meta["media"] == [
        {
            "mediaKey": s.tweets[photo]["attachments"]["media_keys"][0],
            "type": "photo",
            "url": "https://pbs.twimg.com/media/a.jpg",
        }
    ]
    assert records[video].meta["media"][0]["url"] == "https://pbs.twimg.com/vid/thumb.jpg"
    assert records[video].meta["media"][0]["type"] == "video"
    assert records[long_post].content.endswith("with a link https://example.com/long & more")
    assert "t.co" not in records[long_post].content
    assert records[linked].content == "read https://example.com/a <now> & later"
    assert records[retweet].content == "RT @bob: original thought by bob that alice retweets"
    assert records[retweet].meta["referencedTweets"] == [{"type": "retweeted", "id": bob_original}]
    mention = records[mentions[3]]
    assert mention.meta["authorUsername"] == "bob"
    assert mention.meta["authorId"] == BOB
    assert mention.url == f"https://x.com/bob/status/{mentions[3]}"
    assert mention.meta["publicMetrics"]["like_count"] == 0
    assert mention.occurred_at.isoformat().startswith(s.tweets[mentions[3]]["created_at"][:19])

    cursor = await harness.cursor()
    assert cursor["userId"] == ME
    assert cursor["username"] == "alice"
    assert cursor["timelines"]["tweets"] == {"newestId": retweet}
    assert cursor["timelines"]["mentions"] == {"newestId": mentions[-1]}
    assert cursor["timelines"]["likes"]["knownIds"][0] == mentions[0]
    assert "run" not in cursor["timelines"]["likes"]


async def test_incremental_uses_since_id_and_costs_one_request_per_timeline(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    own_posts(s, 12)
    for i in range(7):
        s.add_tweet(BOB, f"@alice hi {i}", mentions=[ME])
        s.like(ME, s.add_tweet(CAROL, f"like me {i}"))
    await harness.run()
    cursor = await harness.cursor()
    s.log.clear()

    quiet = await harness.run()

    assert quiet.upserted == 0
    assert [r.endpoint for r in s.log] == ["tweets", "mentions", "likes"]
    assert s.log[2].params["max_results"] == "10"  # a small probe: likes are paid per post read
    assert s.log[0].params["since_id"] == cursor["timelines"]["tweets"]["newestId"]
    assert s.log[1].params["since_id"] == cursor["timelines"]["mentions"]["newestId"]
    assert "start_time" not in s.log[0].params

    s.log.clear()
    new_own = s.add_tweet(ME, "fresh post")
    new_mention = s.add_tweet(BOB, "@alice are you there", mentions=[ME])
    new_like = s.add_tweet(CAROL, "newly liked")
    s.like(ME, new_like)

    changed = await harness.run()

    assert changed.upserted == 3
    assert len(s.log) == 3
    records = await harness.records()
    assert records[new_own].meta["kind"] == "tweet"
    assert records[new_mention].meta["kind"] == "mention"
    assert records[new_like].meta["kind"] == "like"
    assert (await harness.cursor())["timelines"]["tweets"]["newestId"] == new_own


async def test_likes_page_until_a_known_liked_id(harness: Harness, x_state: TwitterState) -> None:
    s = x_state
    first = [s.add_tweet(CAROL, f"old like {i}") for i in range(250)]
    for tweet_id in first:
        s.like(ME, tweet_id)
    await harness.run(twitter_timelines="likes")
    assert len(s.requests_to("likes")) == 3
    s.log.clear()

    later = [s.add_tweet(BOB, f"new like {i}") for i in range(150)]
    for tweet_id in later:
        s.like(ME, tweet_id)
    # the newest known like was unliked meanwhile: the other known ids still stop the walk
    s.likes[ME].remove(first[-1])

    summary = await harness.run(twitter_timelines="likes")

    assert summary.upserted == 150
    # a probe of 10, then 100 new, then 40 new and a known id: stop
    assert [r.params["max_results"] for r in s.log] == ["10", "100", "100"]
    assert [r.endpoint for r in s.log] == ["likes", "likes", "likes"]
    known = (await harness.cursor())["timelines"]["likes"]["knownIds"]
    assert known[0] == later[-1]
    assert len(known) == 20


async def test_rate_window_running_out_defers_and_resumes_without_gaps_or_duplicates(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    s.limits["tweets"] = 2
    own = own_posts(s, 250)
    mentions = [s.add_tweet(BOB, f"@alice {i}", mentions=[ME]) for i in range(6)]

    with pytest.raises(RateLimited) as deferred:
        await harness.run()

    # stopped *before* X answered 429: two pages used the window, the third was not sent
    assert [r.status for r in s.log if r.endpoint == "tweets"] == [200, 200]
    assert 800 < (deferred.value.retry_after or 0) <= 902
    records = await harness.records()
    assert set(records) == set(own[-200:]) | set(mentions)  # mentions have their own window
    cursor = await harness.cursor()
    tweets = cursor["timelines"]["tweets"]
    assert "newestId" not in tweets  # not promoted until the whole pass is accepted
    assert tweets["run"]["pendingNewestId"] == own[-1]
    assert tweets["run"]["untilId"] == own[-200]
    assert tweets["run"]["token"]
    services = await harness.services()
    runs = await SyncStateStore(services.db).recent_runs(1)
    assert runs[0].status == "deferred"

    # a post arrives while the job waits; the window resets
    newer = s.add_tweet(ME, "posted during the deferral")
    s.clock_offset += 901
    resumed = await harness.run()

    assert resumed.status == "ok"
    third = [r for r in s.log if r.endpoint == "tweets"][2]
    assert third.params["pagination_token"] == tweets["run"]["token"]
    assert resumed.upserted == 50  # no page sent twice
    records = await harness.records()
    assert set(own) | set(mentions) <= set(records)
    assert (await harness.cursor())["timelines"]["tweets"] == {"newestId": own[-1]}

    caught_up = await harness.run()
    assert caught_up.upserted == 1
    assert newer in await harness.records()


async def test_429_from_x_defers_to_the_reset_and_keeps_the_cursor(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    own = own_posts(s, 30)
    mentions = [s.add_tweet(BOB, f"@alice {i}", mentions=[ME]) for i in range(150)]
    s.limits["mentions"] = 5
    await harness.run(twitter_timelines="tweets")
    s.exhaust(ME, "mentions")  # another app spent alice's mentions window

    with pytest.raises(RateLimited) as deferred:
        await harness.run()

    assert [r.status for r in s.log if r.endpoint == "mentions"] == [429]
    assert s.log[-1].endpoint == "likes"  # the likes window was still open
    assert 800 < (deferred.value.retry_after or 0) <= 902
    cursor = await harness.cursor()
    assert cursor["timelines"]["tweets"] == {"newestId": own[-1]}
    assert cursor["timelines"]["mentions"] == {}

    s.clock_offset += 901
    summary = await harness.run()
    assert summary.upserted == 150
    assert set(mentions) <= set(await harness.records())


async def test_refused_pagination_token_resumes_from_the_checkpoint(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    s.limits["tweets"] = 2
    own = own_posts(s, 250)
    with pytest.raises(RateLimited):
        await harness.run(twitter_timelines="tweets")
    s.clock_offset += 901
    s.tokens_valid_after = s.now() + 1  # X no longer accepts the stored token

    summary = await harness.run(twitter_timelines="tweets")

    tweets = [r for r in s.log if r.endpoint == "tweets"]
    assert [r.status for r in tweets] == [200, 200, 400, 200]
    assert tweets[3].params["until_id"] == own[50]
    assert "pagination_token" not in tweets[3].params
    assert summary.upserted == 50
    assert set(await harness.records()) == set(own)


async def test_server_errors_are_retried(harness: Harness, x_state: TwitterState) -> None:
    s = x_state
    own = own_posts(s, 5)
    s.faults.extend([503, 500])

    summary = await harness.run(twitter_timelines="tweets")

    assert [r.status for r in s.log] == [503, 500, 200, 200]
    assert summary.upserted == 5
    assert set(await harness.records()) == set(own)


async def test_page_budget_is_shared_and_the_next_sync_continues(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    own = own_posts(s, 150)
    mentions = [s.add_tweet(BOB, f"@alice {i}", mentions=[ME]) for i in range(150)]
    likes = [s.add_tweet(CAROL, f"liked {i}") for i in range(150)]
    for tweet_id in likes:
        s.like(ME, tweet_id)

    first = await harness.run(twitter_page_budget=2)

    assert first.status == "ok"
    assert first.stats["budgetExhausted"] == 1
    assert [r.endpoint for r in s.log] == ["me", "tweets", "mentions"]
    second = await harness.run(twitter_page_budget=4)
    assert second.stats.get("budgetExhausted", 0) == 0
    assert set(await harness.records()) == set(own) | set(mentions) | set(likes)


async def test_timelines_can_be_switched_off(harness: Harness, x_state: TwitterState) -> None:
    s = x_state
    own_posts(s, 3)
    s.add_tweet(BOB, "@alice hey", mentions=[ME])

    summary = await harness.run(twitter_timelines="mentions")

    assert [r.endpoint for r in s.log] == ["me", "mentions"]
    assert summary.upserted == 1


async def test_full_resync_and_since_bound_the_backfill(
    harness: Harness, x_state: TwitterState
) -> None:
    s = x_state
    old = s.add_tweet(ME, "from last month", created_at=days_ago(30))
    recent = s.add_tweet(ME, "from yesterday", created_at=days_ago(1))

    bounded = await harness.run(FetchOptions(since=days_ago(7)), twitter_timelines="tweets")

    assert bounded.upserted == 1
    assert set(await harness.records()) == {recent}
    s.log.clear()
    full = await harness.run(FetchOptions(force_full_sync=True), twitter_timelines="tweets")
    assert full.upserted == 2
    assert [r.endpoint for r in s.log] == ["me", "tweets"]  # the cursor was ignored
    assert "since_id" not in s.log[1].params
    assert set(await harness.records()) == {old, recent}


class _ShiftedClock(SystemClock):
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset


async def test_monthly_usage_cap_stops_calls_until_it_resets_then_resumes(
    harness: Harness, x_state: TwitterState
) -> None:
    """X's usage cap (429 `UsageCapExceeded`, window headers still showing requests left) is
    not a 15-minute window: the account becomes `quota_exhausted` (status, status page,
    metric) and no call is made until the configured reset day, then the sync resumes."""
    s = x_state
    own = own_posts(s, 30)
    services = await harness.services()
    clock = _ShiftedClock()
    settings = services.settings.model_copy(update={"twitter_usage_cap_reset_day": 15})
    engine = SyncEngine(
        settings=settings,
        db=services.db,
        sink=services.sink,
        tokens=services.tokens,
        http=services.http,
        clock=clock,
    )
    s.usage_cap = 0
    before = REGISTRY.get_sample_value("ingestion_quota_exhausted_total", {"provider": "twitter"})

    with pytest.raises(QuotaExhausted) as capped:
        await engine.run("twitter", "u1")

    assert [r.status for r in s.log] == [429]  # one call, not retried, other timelines not tried
    now = datetime.now(UTC)
    reset = usage_cap_reset(now, "Monthly", 15)
    assert reset.day == 15
    # The job is deferred at most a day at a time (bounded waits); the cursor keeps the reset.
    wait = min((reset - now).total_seconds(), MAX_WAIT_SECONDS)
    assert abs((capped.value.retry_after or 0) - wait) < 60
    state = await SyncStateStore(services.db).load("u1", "twitter")
    assert state.status == "quota_exhausted"
    assert "Usage cap exceeded" in (state.last_error or "")
    after = REGISTRY.get_sample_value("ingestion_quota_exhausted_total", {"provider": "twitter"})
    assert (after or 0) - (before or 0) == 1
    document = await gather_status(services.db, None)
    (row,) = [r for r in document["accounts"] if r["provider"] == "twitter"]
    assert row["status"] == "quota_exhausted"
    page = render_status_page(
        document, key_required=False, queue_available=True, now=datetime.now(UTC)
    )
    assert "s-quota_exhausted" in page

    # The scheduler's next ticks: not one call while the cap holds.
    for _ in range(3):
        with pytest.raises(QuotaExhausted):
            await engine.run("twitter", "u1")
    assert len(s.log) == 1

    # The period ends (X resets the cap; our clock passes the reset day): the sync resumes.
    s.usage_cap = None
    clock.offset = reset - now + timedelta(minutes=1)
    summary = await engine.run("twitter", "u1")
    assert summary.status == "ok"
    assert set(own) <= set(await harness.records())
    assert (await SyncStateStore(services.db).load("u1", "twitter")).status == "ok"


def test_usage_cap_reset_day_is_clamped_to_the_month() -> None:
    jan = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert usage_cap_reset(jan, "Monthly", None) == datetime(2026, 2, 1, tzinfo=UTC)
    assert usage_cap_reset(jan, "Monthly", 31) == datetime(2026, 2, 28, tzinfo=UTC)
    assert usage_cap_reset(datetime(2026, 12, 20, tzinfo=UTC), "Monthly", 10) == datetime(
        2027, 1, 10, tzinfo=UTC
    )
    assert usage_cap_reset(jan, "Daily", None) == datetime(2026, 2, 1, tzinfo=UTC)


async def test_a_post_that_cannot_be_transformed_is_skipped_and_counted(
    harness: Harness, x_state: TwitterState
) -> None:
    first, middle, last = own_posts(x_state, 3)
    # A field of the wrong shape (the API never sends one): no record can be made of it.
    x_state.tweets[middle]["public_metrics"] = "garbage"

    summary = await harness.run()

    assert summary.status == "ok"
    assert summary.stats.get("skipped") == 1
    assert set(await harness.records()) == {first, last}
    again = await harness.run()
    assert again.status == "ok"
    assert not again.stats.get("skipped")
