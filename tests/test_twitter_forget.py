"""X deletions no cursor reports: posts deleted and likes taken back, found by re-reading the
recent window (`TWITTER_RECONCILE_DAYS`) every `TWITTER_RECONCILE_HOURS`.

The real engine and embedded store against the X emulator, on a clock the test moves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stamina
from sqlalchemy import select

from ingestion.clock import SystemClock
from ingestion.config import Settings
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.models import MemoryRow
from ingestion.sync import SyncEngine, SyncSummary
from tests.emulators.server import RunningServer, serve
from tests.emulators.twitter import TwitterState, create_app, days_ago

ME, BOB, CAROL = "100", "200", "300"
TOKEN = "x-access-token-alice"


class ShiftedClock(SystemClock):
    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class World:
    def __init__(self, state: TwitterState, services: Services, clock: ShiftedClock) -> None:
        self.state = state
        self.services = services
        self.clock = clock

    async def sync(self, **overrides: Any) -> SyncSummary:
        settings = self.services.settings.model_copy(update=overrides)
        engine = SyncEngine(
            settings=settings,
            db=self.services.db,
            sink=self.services.sink,
            tokens=self.services.tokens,
            http=self.services.http,
            clock=self.clock,
        )
        return await engine.run("twitter", "u1")

    async def stored(self) -> set[str]:
        async with self.services.db.session() as session:
            return set((await session.execute(select(MemoryRow.source_id))).scalars())

    def likes_pages(self) -> int:
        return len(self.state.requests_to("likes"))


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    state = TwitterState()
    state.add_user(ME, "alice")
    state.add_user(BOB, "bob")
    state.add_user(CAROL, "carol")
    state.tokens[TOKEN] = ME
    server: RunningServer = serve(create_app(state))
    clock = ShiftedClock()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'ingestion.db'}",
        twitter_api_url=f"{server.url}/2",
    )
    services = await Services.open(settings, clock=clock)
    async with services.db.session() as session:
        await save_account(session, user_id="u1", provider_id="twitter", access_token=TOKEN)
    yield World(state, services, clock)
    await services.aclose()
    server.stop()


def unlike(state: TwitterState, tweet_id: str) -> None:
    state.likes[ME].remove(tweet_id)


async def test_deleted_posts_and_unlikes_inside_the_window_are_forgotten(world: World) -> None:
    s = world.state
    kept_post = s.add_tweet(ME, "still here", created_at=days_ago(2))
    deleted_post = s.add_tweet(ME, "regrettable", created_at=days_ago(3))
    old_deleted = s.add_tweet(ME, "old and deleted", created_at=days_ago(40))
    mention = s.add_tweet(BOB, "hi @alice", created_at=days_ago(4), mentions=[ME])
    deleted_mention = s.add_tweet(CAROL, "@alice oops", created_at=days_ago(5), mentions=[ME])
    recent_like = s.add_tweet(BOB, "nice one", created_at=days_ago(6))
    old_like = s.add_tweet(CAROL, "classic", created_at=days_ago(90))
    for tweet_id in (old_like, recent_like, kept_post):
        s.like(ME, tweet_id)
    first = await world.sync()
    assert first.status == "ok"
    everything = {kept_post, deleted_post, old_deleted, mention, deleted_mention}
    assert everything | {recent_like, old_like} == await world.stored()

    del s.tweets[deleted_post]
    del s.tweets[old_deleted]
    del s.tweets[deleted_mention]
    unlike(s, recent_like)
    unlike(s, old_like)
    unlike(s, kept_post)  # still her own post: its record stays

    quiet = await world.sync()  # not due yet: no re-read, nothing deleted
    assert quiet.deleted == 0
    assert "reconcileRequests" not in quiet.stats

    world.clock.offset += timedelta(hours=24)
    starved = await world.sync(twitter_page_budget=4)  # 3 incremental pages, 1 left: too few
    assert starved.deleted == 0
    assert len(await world.stored()) == 7

    summary = await world.sync()
    assert summary.stats["reconcileRequests"] == 3  # posts, mentions, likes: one page each
    assert summary.deleted == 3
    assert await world.stored() == {kept_post, mention, old_deleted, old_like}

    again = await world.sync()  # the next pass is a day away
    assert again.deleted == 0
    assert "reconcileRequests" not in again.stats


async def test_likes_are_read_only_down_to_an_anchor_older_than_the_window(
    world: World,
) -> None:
    s = world.state
    old_posts = [s.add_tweet(BOB, f"old {i}", created_at=days_ago(400 + i)) for i in range(250)]
    for tweet_id in reversed(old_posts):
        s.like(ME, tweet_id)
    await world.sync()  # first sync: the likes' top becomes the first anchor

    world.clock.offset += timedelta(days=31)  # the anchor is now older than the window
    fresh = s.add_tweet(CAROL, "fresh", created_at=datetime.now(UTC) + timedelta(days=30))
    gone = s.add_tweet(CAROL, "gone", created_at=datetime.now(UTC) + timedelta(days=30))
    s.like(ME, gone)
    s.like(ME, fresh)
    await world.sync()
    assert {fresh, gone} <= await world.stored()

    unlike(s, gone)
    world.clock.offset += timedelta(hours=25)
    before = world.likes_pages()
    summary = await world.sync()
    # 252 likes, but the pass stops on the page holding the anchor: one page, not three.
    assert world.likes_pages() - before == 2  # the incremental probe + the pass's one page
    assert summary.deleted == 1
    assert gone not in await world.stored()
    assert fresh in await world.stored()
