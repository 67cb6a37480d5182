"""Gmail sync in-process: backfill, incremental changes, expiry, quota pacing, refusals.

Each test runs the real service parts (`Services.open`: SQLite state, HTTP memory sink, token
service, sync engine) against the Gmail emulator and the memory engine emulator on loopback.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestion.config import Settings
from ingestion.errors import PermanentError
from ingestion.providers.base import FetchOptions
from ingestion.providers.gmail import client as gmail_client
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.sync import SyncSummary
from tests.emulators import gmail as gmail_emulator
from tests.emulators import memory_engine
from tests.emulators.gmail import GmailState, google_error
from tests.emulators.gmail_corpus import generated_message
from tests.emulators.memory_engine import MemoryEngineState
from tests.emulators.server import RunningServer, serve

USER = "u1"
TOKEN = "ya29.gmail-test-token"


@dataclass
class World:
    gmail: GmailState
    engine: MemoryEngineState
    services: Services

    async def sync(self, **options: Any) -> SyncSummary:
        return await self.services.engine.run("gmail", USER, FetchOptions(**options))

    def add(self, index: int, **kwargs: Any) -> str:
        raw, when = generated_message(index, base=datetime.now(UTC))
        return self.gmail.add_message(USER, raw, internal_date=when, **kwargs)

    def stored(self) -> dict[str, dict[str, Any]]:
        """Records in the memory engine by Gmail message id."""
        with self.engine.lock:
            return {r["sourceId"]: r for r in self.engine.records.values()}

    def requests_since(self, mark: int) -> list[str]:
        """API calls since `mark` (calls inside a batch count, the batch envelope does not)."""
        with self.gmail.lock:
            return [r.endpoint for r in self.gmail.requests[mark:] if r.endpoint != "batch"]


@pytest.fixture
def servers() -> Iterator[tuple[GmailState, RunningServer, MemoryEngineState, RunningServer]]:
    gmail = GmailState()
    gmail.add_user(USER, TOKEN)
    engine = MemoryEngineState()
    gmail_server = serve(gmail_emulator.create_app(gmail))
    engine_server = serve(memory_engine.create_app(engine))
    yield gmail, gmail_server, engine, engine_server
    gmail_server.stop()
    engine_server.stop()


async def open_world(
    servers: tuple[GmailState, RunningServer, MemoryEngineState, RunningServer],
    tmp_path: Path,
    **overrides: Any,
) -> World:
    gmail, gmail_server, engine, engine_server = servers
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'ingestion.db'}",
        gmail_api_url=gmail_server.url,
        memory_engine_url=engine_server.url,
        **overrides,
    )
    services = await Services.open(settings, migrate=True)
    async with services.db.session() as session:
        await save_account(session, user_id=USER, provider_id="google", access_token=TOKEN)
    return World(gmail, engine, services)


@pytest.fixture
async def world(servers: Any, tmp_path: Path) -> AsyncIterator[World]:
    world = await open_world(servers, tmp_path, gmail_page_size=4)
    yield world
    await world.services.aclose()


async def cursor(world: World) -> dict[str, Any]:
    state = await world.services.engine.state.load(USER, "gmail")
    return dict(state.cursor)


async def test_backfill_pages_then_incremental_add_delete_trash_relabel(world: World) -> None:
    ids = [world.add(i) for i in range(10)]
    world.gmail.add_message(USER, generated_message(99)[0], labels=["SPAM"])
    first = await world.sync()
    assert first.status == "ok"
    assert (first.fetched, first.upserted, first.pages) == (10, 10, 3)
    assert set(world.stored()) == set(ids)
    state = await cursor(world)
    assert state["mode"] == "incremental"
    assert state["historyId"]

    new = world.add(50)
    world.gmail.delete_message(USER, ids[0])
    world.gmail.trash(USER, ids[1])
    world.gmail.relabel(USER, ids[2], add=["STARRED", "Label_7"], remove=["UNREAD"])
    world.gmail.relabel(USER, ids[3], add=["SPAM"], remove=["INBOX"])
    mark = world.gmail.count()
    second = await world.sync()
    assert second.status == "ok"
    stored = world.stored()
    assert new in stored
    assert ids[0] not in stored
    assert ids[1] not in stored
    assert ids[3] not in stored
    assert set(stored[ids[2]]["metadata"]["labels"]) == {"INBOX", "STARRED", "Label_7"}
    # One history page, then only the added and relabelled messages are fetched.
    assert sorted(world.requests_since(mark)) == ["history.list", "messages.get", "messages.get"]

    world.gmail.untrash(USER, ids[1])
    world.gmail.relabel(USER, ids[3], remove=["SPAM"], add=["INBOX"])
    third = await world.sync()
    assert third.upserted == 2
    assert {ids[1], ids[3]} <= set(world.stored())
    assert len(world.stored()) == 10


async def test_sync_without_changes_makes_exactly_one_request(world: World) -> None:
    for i in range(3):
        world.add(i)
    await world.sync()
    mark = world.gmail.count()
    summary = await world.sync()
    assert world.requests_since(mark) == ["history.list"]
    assert (summary.status, summary.fetched, summary.upserted, summary.deleted) == ("ok", 0, 0, 0)


async def test_changes_made_during_the_backfill_are_picked_up_next_time(world: World) -> None:
    ids = [world.add(i) for i in range(8)]
    changed: list[str] = []

    def meanwhile(summary: SyncSummary, page: Any) -> None:
        if summary.pages == 1:  # after the first page was accepted, the mailbox moves on
            changed.append(world.add(60))
            world.gmail.delete_message(USER, ids[-1])  # the newest: already mirrored

    await world.services.engine.run("gmail", USER, FetchOptions(), progress=meanwhile)
    assert changed[0] not in world.stored()
    assert ids[-1] in world.stored()
    await world.sync()
    assert changed[0] in world.stored()
    assert ids[-1] not in world.stored()


async def test_expired_history_resyncs_by_itself_without_duplicates(world: World) -> None:
    ids = [world.add(i) for i in range(6)]
    await world.sync()
    world.gmail.expire_history(USER)
    late = world.add(70)
    summary = await world.sync()
    assert summary.status == "ok"
    assert summary.error is None
    assert set(world.stored()) == {*ids, late}
    with world.engine.lock:
        assert max(world.engine.upserts.values()) == 1  # unchanged records were not resent
    state = await cursor(world)
    assert state["mode"] == "incremental"
    assert int(state["historyId"]) >= world.gmail.mailboxes[USER].history_floor


async def test_a_message_gone_when_fetched_is_deleted_not_an_error(world: World) -> None:
    ids = [world.add(i) for i in range(3)]
    await world.sync()
    world.gmail.relabel(USER, ids[1], add=["IMPORTANT"])
    world.gmail.inject(404, gmail_emulator.NOT_FOUND, path_contains=f"/messages/{ids[1]}")
    summary = await world.sync()
    assert summary.status == "ok"
    assert summary.deleted == 1
    assert ids[1] not in world.stored()


async def test_missing_scope_is_a_visible_error_not_an_empty_success(world: World) -> None:
    world.add(1)
    world.gmail.inject(
        403,
        google_error(
            403,
            "Request had insufficient authentication scopes.",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        ),
        path_contains="/messages",
    )
    with pytest.raises(PermanentError, match="insufficient authentication scopes"):
        await world.sync()
    state = await world.services.engine.state.load(USER, "gmail")
    assert state.status == "error"
    assert "insufficient" in (state.last_error or "")
    assert world.stored() == {}


async def test_rate_limit_403_and_5xx_are_retried(world: World) -> None:
    ids = [world.add(i) for i in range(3)]
    world.gmail.inject(
        403,
        google_error(
            403,
            "User-rate limit exceeded.",
            "userRateLimitExceeded",
            "PERMISSION_DENIED",
            domain="usageLimits",
        ),
        path_contains="/messages/",
    )
    world.gmail.inject(
        503,
        google_error(503, "Backend Error", "backendError", "UNAVAILABLE"),
        path_contains="/messages/",
    )
    summary = await world.sync()
    assert summary.status == "ok"
    assert set(world.stored()) == set(ids)


async def test_max_results_caps_and_since_narrows_the_backfill(world: World) -> None:
    now = datetime.now(UTC)
    ids = [
        world.gmail.add_message(
            USER, generated_message(i)[0], internal_date=now - timedelta(days=10 - i)
        )
        for i in range(10)
    ]
    capped = await world.sync(max_results=3)
    assert capped.fetched == 3
    assert set(world.stored()) == set(ids[-3:])  # newest first
    assert (await cursor(world))["mode"] == "incremental"
    narrowed = await world.sync(force_full_sync=True, since=now - timedelta(days=4, hours=12))
    assert narrowed.fetched == 4
    listing = [r for r in world.gmail.requests if r.endpoint == "messages.list"][-1]
    assert "in%3Aspam" in listing.query
    assert "after%3A" in listing.query


async def test_quota_pacing_stays_under_the_budget(servers: Any, tmp_path: Path) -> None:
    gmail: GmailState = servers[0]
    # Emulated per-user limit: 3,000 units/minute, a bucket of 100 units (2 s of quota: room
    # for requests that the network delivers closer together than the client paced them).
    gmail.set_quota(3000, burst=100)
    paced = await open_world(servers, tmp_path, gmail_quota_units_per_minute=3000)
    try:
        for i in range(40):
            raw, when = generated_message(i, base=datetime.now(UTC))
            gmail.add_message(USER, raw, internal_date=when)
        summary = await paced.sync()
        assert summary.status == "ok"
        assert summary.upserted == 40
        assert gmail.throttled == 0
        assert summary.stats["quotaUnits"] == 1 + 5 + 5 * 40
    finally:
        await paced.services.aclose()


async def test_default_budget_against_a_one_second_bucket_never_sees_a_429(
    servers: Any, tmp_path: Path
) -> None:
    """Gmail's default 6,000 units per minute enforced as strictly as can be (a bucket of one
    second): a backfill paced at the default budget runs at the quota-bound rate without a
    single 429, even when requests reach the API closer together than they were paced."""
    gmail: GmailState = servers[0]
    gmail.set_quota(6000)  # 100 units per second, a bucket of 100
    paced = await open_world(servers, tmp_path, gmail_page_size=40)
    try:
        for i in range(80):
            raw, when = generated_message(i, base=datetime.now(UTC))
            gmail.add_message(USER, raw, internal_date=when)
        summary = await paced.sync()
        assert (summary.status, summary.upserted) == ("ok", 80)
        assert gmail.throttled == 0
        units = summary.stats["quotaUnits"]
        assert units == 1 + 2 * 5 + 5 * 80
        # Within a few percent of the quota-bound time (less the first second's bucket).
        assert summary.seconds >= (units - 100) / 100 - 0.05
        assert summary.seconds <= units / 100 * 1.1 + 0.5
    finally:
        await paced.services.aclose()


async def test_without_pacing_the_emulator_does_throttle(servers: Any, tmp_path: Path) -> None:
    """The control of the test above: a budget far above the limit runs into 429s (retried)."""
    gmail: GmailState = servers[0]
    gmail.set_quota(3000, burst=100)
    unpaced = await open_world(servers, tmp_path, gmail_quota_units_per_minute=600_000)
    try:
        for i in range(40):
            raw, when = generated_message(i, base=datetime.now(UTC))
            gmail.add_message(USER, raw, internal_date=when)
        summary = await unpaced.sync()
        assert summary.status == "ok"
        assert summary.upserted == 40
        assert gmail.throttled > 0
    finally:
        await unpaced.services.aclose()


async def test_401_refreshes_the_token_once_and_the_sync_continues(
    servers: Any, tmp_path: Path
) -> None:
    """The stored access token was revoked: Gmail answers 401, the token service refreshes at
    the OAuth emulator (which hands the new token to the Gmail emulator), the sync goes on."""
    from tests.emulators import oauth

    gmail: GmailState = servers[0]
    oauth_state = oauth.OAuthState()
    oauth_server = serve(oauth.create_app(oauth_state))
    oauth_state.on_token = lambda new, old: gmail.tokens.__setitem__(new, USER)
    grant = oauth_state.issue("google", USER)
    env = oauth_state.settings_env(oauth_server.url, ("google",))
    world = await open_world(
        servers,
        tmp_path,
        google_token_url=env["GOOGLE_TOKEN_URL"],
        google_client_id=env["GOOGLE_CLIENT_ID"],
        google_client_secret=env["GOOGLE_CLIENT_SECRET"],
    )
    try:
        async with world.services.db.session() as session:
            await save_account(
                session,
                user_id=USER,
                provider_id="google",
                access_token=grant.access_token,  # unknown to Gmail: answers 401
                refresh_token=grant.refresh_token,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        ids = [world.add(i) for i in range(5)]
        summary = await world.sync()
        assert summary.status == "ok"
        assert set(world.stored()) == set(ids)
        assert oauth_state.token_calls("google") == 1
        statuses = [r.status for r in gmail.requests if r.endpoint != "batch"]
        assert statuses[0] == 401
        assert statuses[1:] == [200] * (len(statuses) - 1)
    finally:
        await world.services.aclose()
        oauth_server.stop()


async def test_one_request_per_message_when_batching_is_off(servers: Any, tmp_path: Path) -> None:
    world = await open_world(servers, tmp_path, gmail_batch_size=0)
    try:
        ids = [world.add(i) for i in range(5)]
        summary = await world.sync()
        assert summary.upserted == 5
        assert set(world.stored()) == set(ids)
        with world.gmail.lock:
            kinds = [(r.endpoint, r.batch) for r in world.gmail.requests]
        assert (
            kinds
            == [("getProfile", False), ("messages.list", False)] + [("messages.get", False)] * 5
        )
    finally:
        await world.services.aclose()


async def test_batch_answers_are_parsed_off_the_event_loop(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch answer (up to 50 messages, each as large as the transport admits) is split and
    its JSON parsed on a thread: the event loop keeps serving other jobs meanwhile."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = gmail_client.loads_json

    def recording(payload: bytes, *, what: str) -> Any:
        threads.append(threading.get_ident())
        return real(payload, what=what)

    monkeypatch.setattr(gmail_client, "loads_json", recording)
    ids = [world.add(i) for i in range(6)]
    summary = await world.sync()
    assert summary.upserted == 6
    assert set(world.stored()) == set(ids)
    assert len(threads) == 6  # every message came through a batch answer
    assert loop_thread not in threads


def _gmail_calls(world: World, endpoint: str) -> int:
    with world.gmail.lock:
        return sum(r.endpoint == endpoint for r in world.gmail.requests)


async def test_the_next_page_is_fetched_while_the_sink_holds_this_one(world: World) -> None:
    """Pipelined backfill: pages N+1 and N+2 are listed and fetched while page N is in the
    sink, and still nothing of them reaches the engine before page N was accepted."""
    ids = [world.add(i) for i in range(12)]  # three pages of four
    # Page 1 waits in the sink (a 503 with Retry-After, retried inline) for 0.3 s.
    world.engine.fail_next(503, retry_after=0.3, path="/memories/batch")
    seen: list[tuple[int, int, int, int]] = []

    def progress(summary: SyncSummary, _page: object) -> None:
        with world.engine.lock:
            stored = len(world.engine.records)
        listed = _gmail_calls(world, "messages.list")
        seen.append((summary.pages, listed, _gmail_calls(world, "messages.get"), stored))

    summary = await world.services.engine.run("gmail", USER, FetchOptions(), progress=progress)
    assert summary.status == "ok"
    # When page 1 was accepted, pages 2 and 3 were already listed and fetched, not yet sent.
    assert seen[0] == (1, 3, 12, 4)
    assert seen[-1] == (3, 3, 12, 12)
    assert set(world.stored()) == set(ids)
    assert max(world.engine.upserts.values()) == 1


async def test_a_page_read_ahead_is_dropped_when_the_sink_fails(world: World) -> None:
    """The sink refuses page 2 for good: the cursor stays after page 1, the pages read ahead
    (3, 4 and 5, never more: memory stays bounded) reach neither the engine nor the cursor,
    the reader stops, and the next sync resumes after page 1."""
    ids = [world.add(i) for i in range(24)]  # six pages of four
    # Page 2 first waits 0.3 s in the sink (503, Retry-After), then is refused (400).
    world.engine.fail_next(503, retry_after=0.3, path="/memories/batch", skip=1)
    world.engine.fail_next(400, path="/memories/batch", message="refused")
    with pytest.raises(PermanentError, match="refused"):
        await world.sync()
    assert len(world.stored()) == 4
    state = await cursor(world)
    assert (state["mode"], state["backfill"]["count"]) == ("backfill", 4)
    # Pages 3 and 4 read ahead (one queued, one waiting to be), 5 in flight: all dropped.
    assert _gmail_calls(world, "messages.list") == 5
    await asyncio.sleep(0.2)
    assert _gmail_calls(world, "messages.list") == 5  # and the reader is gone
    resumed = await world.sync()
    assert (resumed.status, resumed.fetched, resumed.pages) == ("ok", 20, 5)
    assert set(world.stored()) == set(ids)
    assert max(world.engine.upserts.values()) == 1
