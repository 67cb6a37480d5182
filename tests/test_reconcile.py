"""Deletions propagate across cursor gaps: the engine's reconciliation of delivered records.

Gmail (history expired → full resync) and Calendar (410 → full resync of one calendar, a calendar
deleted or unshared) against their emulators, with the HTTP sink (memory engine emulator) on
SQLite and the embedded store on PostgreSQL; then the scope rules (exact prefixes, time bounds)
and migration 0003 on both databases.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from structlog.testing import capture_logs

from ingestion import reconcile
from ingestion.config import Settings
from ingestion.errors import PermanentError
from ingestion.memory.record import MemoryRecord, record_id
from ingestion.providers.base import FetchOptions, Scope, SyncPage
from ingestion.reconcile import DeliveredRecords, Reconciliation
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.db import sync_url, upgrade
from ingestion.storage.models import DeliveredRow, MemoryRow
from ingestion.sync import SyncSummary
from tests.emulators import gmail as gmail_emulator
from tests.emulators import memory_engine
from tests.emulators.calendar import CalendarState
from tests.emulators.calendar import create_app as calendar_app
from tests.emulators.gmail import GmailState
from tests.emulators.gmail_corpus import generated_message
from tests.emulators.memory_engine import MemoryEngineState
from tests.emulators.server import RunningServer, serve

USER = "u1"
TOKEN = "ya29.reconcile-test-token"
#: sqlite-http: SQLite state and the memory engine over HTTP; postgres-embedded: PostgreSQL
#: state and the embedded store in the same database.
BACKENDS = ["sqlite-http", "postgres-embedded"]


class Crash(Exception):
    """Raised between two accepted pages, as a killed process would stop there."""


@dataclass
class World:
    provider: str
    services: Services
    engine: MemoryEngineState
    gmail: GmailState
    calendar: CalendarState

    async def sync(self, crash_after_pages: int | None = None, **options: Any) -> SyncSummary:
        def progress(summary: SyncSummary, _page: SyncPage) -> None:
            if crash_after_pages is not None and summary.pages >= crash_after_pages:
                raise Crash(f"stopped after page {summary.pages}")

        return await self.services.engine.run(
            self.provider, USER, FetchOptions(**options), progress=progress
        )

    async def stored(self) -> set[str]:
        """sourceIds of the user's records in the sink (engine emulator or embedded store)."""
        if self.services.sink.kind == "http":
            with self.engine.lock:
                return {r["sourceId"] for r in self.engine.records.values()}
        async with self.services.db.session() as session:
            rows = await session.execute(
                select(MemoryRow.source_id).where(
                    MemoryRow.user_id == USER, MemoryRow.source == self.provider
                )
            )
            return set(rows.scalars())

    async def remembered(self) -> set[str]:
        async with self.services.db.session() as session:
            rows = await session.execute(
                select(DeliveredRow.source_id).where(
                    DeliveredRow.user_id == USER, DeliveredRow.provider == self.provider
                )
            )
            return set(rows.scalars())

    async def open_scopes(self) -> dict[str, Any]:
        state = await self.services.engine.state.load(USER, self.provider)
        return dict(state.reconcile.get("scopes") or {})


@pytest.fixture
def emulators() -> Iterator[tuple[GmailState, CalendarState, MemoryEngineState, dict[str, str]]]:
    gmail = GmailState()
    gmail.add_user(USER, TOKEN)
    calendar = CalendarState(tokens={TOKEN: USER})
    engine = MemoryEngineState()
    servers: list[RunningServer] = [
        serve(gmail_emulator.create_app(gmail)),
        serve(calendar_app(calendar)),
        serve(memory_engine.create_app(engine)),
    ]
    urls = {"gmail": servers[0].url, "calendar": servers[1].url, "engine": servers[2].url}
    yield gmail, calendar, engine, urls
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; each test works on its own copy."""
    path = tmp_path_factory.mktemp("reconcile-template") / "ingestion.db"
    upgrade(Settings(_env_file=None, database_url=f"sqlite:///{path}"))  # type: ignore[call-arg]
    return path


async def open_world(
    provider: str,
    backend: str,
    request: pytest.FixtureRequest,
    emulators: tuple[GmailState, CalendarState, MemoryEngineState, dict[str, str]],
    tmp_path: Path,
    **overrides: Any,
) -> World:
    gmail, calendar, engine, urls = emulators
    if backend == "sqlite-http":
        database = tmp_path / "ingestion.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), database)
        database_url, engine_url, migrate = f"sqlite:///{database}", urls["engine"], False
    else:
        database_url, engine_url, migrate = request.getfixturevalue("pg_url"), None, True
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        memory_engine_url=engine_url,
        gmail_api_url=urls["gmail"],
        calendar_api_url=urls["calendar"],
        calendar_quota_requests_per_minute=60_000,
        **overrides,
    )
    services = await Services.open(settings, migrate=migrate)
    async with services.db.session() as session:
        await save_account(session, user_id=USER, provider_id="google", access_token=TOKEN)
    return World(provider, services, engine, gmail, calendar)


@pytest.fixture
async def gmail_world(
    request: pytest.FixtureRequest, emulators: Any, tmp_path: Path
) -> AsyncIterator[World]:
    world = await open_world(
        "gmail", request.param, request, emulators, tmp_path, gmail_page_size=2
    )
    yield world
    await world.services.aclose()


@pytest.fixture
async def calendar_world(
    request: pytest.FixtureRequest, emulators: Any, tmp_path: Path
) -> AsyncIterator[World]:
    world = await open_world(
        "calendar", request.param, request, emulators, tmp_path, calendar_page_size=2
    )
    yield world
    await world.services.aclose()


def add_mail(world: World, index: int, when: datetime | None = None) -> str:
    raw, generated = generated_message(index, base=datetime.now(UTC))
    return world.gmail.add_message(USER, raw, internal_date=when or generated)


# --- Gmail ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gmail_world", BACKENDS, indirect=True)
async def test_gmail_deleted_while_history_expired_is_removed_old_mail_kept(
    gmail_world: World,
) -> None:
    world = gmail_world
    ids = [add_mail(world, i) for i in range(5)]
    await world.sync()
    # Older than the backfill window: reaches us through history only, never listed again.
    old = add_mail(world, 90, when=datetime.now(UTC) - timedelta(days=400))
    await world.sync()
    assert await world.stored() == {*ids, old}
    assert await world.remembered() == {*ids, old}

    world.gmail.delete_message(USER, ids[0])
    world.gmail.trash(USER, ids[1])  # trashed: not listed by the resync either
    world.gmail.expire_history(USER)  # nobody can read of those changes any more
    summary = await world.sync()

    assert summary.status == "ok"
    assert summary.stats["swept"] == 2
    assert await world.stored() == {*ids[2:], old}
    assert await world.remembered() == {*ids[2:], old}
    assert await world.open_scopes() == {}
    # The next sync is incremental and sweeps nothing.
    summary = await world.sync()
    assert "swept" not in summary.stats
    assert await world.stored() == {*ids[2:], old}


@pytest.mark.parametrize("gmail_world", BACKENDS, indirect=True)
async def test_gmail_crash_mid_resync_sweeps_nothing_then_completes(gmail_world: World) -> None:
    world = gmail_world
    ids = [add_mail(world, i) for i in range(7)]  # four list pages of two
    await world.sync()
    world.gmail.delete_message(USER, ids[3])
    world.gmail.expire_history(USER)
    with pytest.raises(Crash):
        await world.sync(crash_after_pages=1)
    # One page accepted, the enumeration is open, nothing was swept.
    assert await world.stored() == set(ids)
    scopes = await world.open_scopes()
    assert list(scopes) == [""]
    assert scopes[""]["since"] is not None

    profiles = world.gmail.count("getProfile")
    summary = await world.sync()
    assert world.gmail.count("getProfile") == profiles  # resumed, not restarted
    assert summary.fetched == 4  # the two pages left of six messages (one was deleted)
    assert summary.stats["swept"] == 1
    # The messages of the page accepted before the crash were not listed again, yet kept.
    assert await world.stored() == set(ids) - {ids[3]}
    assert await world.remembered() == set(ids) - {ids[3]}
    assert await world.open_scopes() == {}


@pytest.mark.parametrize("gmail_world", ["sqlite-http"], indirect=True)
async def test_gmail_sweep_refused_by_the_engine_is_finished_by_the_next_run(
    gmail_world: World,
) -> None:
    world = gmail_world
    ids = [add_mail(world, i) for i in range(5)]
    await world.sync()
    world.gmail.delete_message(USER, ids[0])
    world.gmail.delete_message(USER, ids[4])
    world.gmail.expire_history(USER)
    world.engine.fail_next(400, path="/memories/delete")
    with pytest.raises(PermanentError):
        await world.sync()
    # The last page was accepted but its cursor not stored: the enumeration is still open.
    assert (await cursor_of(world))["mode"] == "backfill"
    assert list(await world.open_scopes()) == [""]
    summary = await world.sync()
    assert summary.stats["swept"] == 2
    assert await world.stored() == set(ids[1:4])
    assert (await cursor_of(world))["mode"] == "incremental"


async def cursor_of(world: World) -> dict[str, Any]:
    return dict((await world.services.engine.state.load(USER, world.provider)).cursor)


@pytest.mark.parametrize("gmail_world", ["sqlite-http"], indirect=True)
async def test_gmail_capped_backfill_sweeps_nothing(gmail_world: World) -> None:
    world = gmail_world
    ids = [add_mail(world, i) for i in range(4)]
    await world.sync()
    summary = await world.sync(force_full_sync=True, max_results=1)
    assert "swept" not in summary.stats
    assert await world.stored() == set(ids)


# --- Calendar ------------------------------------------------------------------------------

TEAM = "team_1%@group.calendar.google.com"  # LIKE wildcards in the id: matched exactly
HOME = "team_1x@group.calendar.google.com"


def seed_calendar(world: World, calendar_id: str, n: int) -> list[str]:
    world.calendar.add_calendar(USER, calendar_id, calendar_id[:6], access_role="owner")
    start = datetime.now(UTC) + timedelta(days=3)
    return [
        f"{calendar_id}/"
        + world.calendar.insert_event(
            calendar_id,
            summary=f"event {k}",
            start={"dateTime": (start + timedelta(hours=k)).strftime("%Y-%m-%dT%H:%M:%SZ")},
            end={
                "dateTime": (start + timedelta(hours=k, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
            },
        )["id"]
        for k in range(n)
    ]


@pytest.mark.parametrize("calendar_world", BACKENDS, indirect=True)
async def test_calendar_event_purged_during_a_410_gap_is_removed(calendar_world: World) -> None:
    world = calendar_world
    team = seed_calendar(world, TEAM, 5)
    home = seed_calendar(world, HOME, 2)
    await world.sync()
    # Beyond the full-sync window: delivered by the incremental sync, never listed in full.
    far = datetime.now(UTC) + timedelta(days=500)
    future = world.calendar.insert_event(
        TEAM,
        summary="far away",
        start={"dateTime": far.strftime("%Y-%m-%dT%H:%M:%SZ")},
        end={"dateTime": (far + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    await world.sync()
    far_id = f"{TEAM}/{future['id']}"
    assert await world.stored() == {*team, *home, far_id}

    world.calendar.expire_sync_tokens(TEAM)
    world.calendar.purge_event(TEAM, team[1].split("/", 1)[1])  # gone even with showDeleted
    world.calendar.purge_event(HOME, home[0].split("/", 1)[1])  # no gap there: not swept yet
    summary = await world.sync()

    assert summary.stats["fullResyncs"] == 1
    assert summary.stats["swept"] == 1
    assert await world.stored() == {*team, *home, far_id} - {team[1]}
    assert await world.remembered() == await world.stored()
    assert await world.open_scopes() == {}


@pytest.mark.parametrize("calendar_world", BACKENDS, indirect=True)
async def test_calendar_crash_mid_410_resync_then_completes(calendar_world: World) -> None:
    world = calendar_world
    team = seed_calendar(world, TEAM, 5)  # three pages of two
    await world.sync()
    world.calendar.expire_sync_tokens(TEAM)
    world.calendar.purge_event(TEAM, team[4].split("/", 1)[1])
    with pytest.raises(Crash):
        await world.sync(crash_after_pages=1)
    assert await world.stored() == set(team)
    assert list(await world.open_scopes()) == [f"{TEAM}/"]
    summary = await world.sync()
    assert summary.stats["swept"] == 1
    assert await world.stored() == set(team) - {team[4]}
    assert await world.open_scopes() == {}


@pytest.mark.parametrize("calendar_world", BACKENDS[:1], indirect=True)
async def test_calendar_gone_while_its_resync_is_open_abandons_the_enumeration(
    calendar_world: World,
) -> None:
    """A crash leaves a calendar's full listing open; the calendar then disappears: its records
    are swept as gone and the open enumeration under it is dropped, the sync succeeds."""
    world = calendar_world
    team = seed_calendar(world, TEAM, 5)
    home = seed_calendar(world, HOME, 2)
    await world.sync()
    world.calendar.expire_sync_tokens(TEAM)
    with pytest.raises(Crash):
        await world.sync(crash_after_pages=1)
    assert list(await world.open_scopes()) == [f"{TEAM}/"]
    world.calendar.delete_calendar(TEAM)
    with capture_logs() as logs:
        summary = await world.sync()
    assert summary.status == "ok"
    assert await world.stored() == set(home)
    assert await world.open_scopes() == {}
    swept = [e for e in logs if e["event"] == "records swept"]
    assert [(e["provider"], e["user_id"]) for e in swept] == [("calendar", USER)]
    assert sum(e["swept"] for e in swept) == len(team)
    [done] = [e for e in logs if e["event"] == "sync finished"]
    assert (done["provider"], done["user_id"]) == ("calendar", USER)
    assert (done["pages"], done["fetched"]) == (summary.pages, summary.fetched)


@pytest.mark.parametrize("calendar_world", BACKENDS, indirect=True)
@pytest.mark.parametrize("how", ["deleted", "revoked", "answers 404 while listed"])
async def test_calendar_that_cannot_be_listed_has_its_records_removed(
    calendar_world: World, how: str
) -> None:
    world = calendar_world
    team = seed_calendar(world, TEAM, 3)
    home = seed_calendar(world, HOME, 2)
    await world.sync()
    assert await world.remembered() == {*team, *home}
    if how == "deleted":
        world.calendar.delete_calendar(TEAM)
    elif how == "revoked":
        world.calendar.revoke(USER, TEAM)
    else:  # still on the list (no list change), its events answer 404
        world.calendar.calendars[TEAM].deleted = True
    summary = await world.sync()
    assert summary.status == "ok"
    assert summary.stats["calendarsUnreadable"] == 1
    assert summary.stats["swept"] == 3
    assert await world.stored() == set(home)
    assert await world.remembered() == set(home)


# --- the scope rules, directly -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sweeps_match_prefixes_exactly_and_respect_time_bounds(
    backend: str,
    request: pytest.FixtureRequest,
    emulators: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconcile, "SWEEP_BATCH", 1)  # every sweep takes several batches
    world = await open_world("calendar", backend, request, emulators, tmp_path)
    try:
        sink = world.services.sink
        delivered = DeliveredRecords(world.services.db, sink, USER, "calendar")
        day = datetime(2026, 6, 1, tzinfo=UTC)

        def record(source_id: str, days: int) -> MemoryRecord:
            return MemoryRecord.build(
                source="calendar",
                user_id=USER,
                source_id=source_id,
                type="event",
                title=source_id,
                content="x",
                occurred_at=day + timedelta(days=days),
                metadata={},
            )

        everything = [
            record("a_%/1", 0),  # in scope, inside the bounds, unseen: swept
            record("a_%/5", 0),  # likewise
            record("a_%/2", -10),  # before `since`: kept
            record("a_%/3", 10),  # after `until`: kept
            record("a_%/4", 0),  # seen by the enumeration: kept
            record("aX%/1", 0),  # `_` is not a wildcard: kept
            record("A_%/1", 0),  # nor is case folded: kept
        ]
        nothing = Reconciliation()
        await sink.upsert(USER, everything)
        await delivered.remember(everything, [], nothing)
        # The same user's records of another provider, under the same source ids: never swept.
        other = DeliveredRecords(world.services.db, sink, USER, "gmail")
        await other.remember([record("a_%/1", 0), record("a_%/9", 0)], [], nothing)
        reconciliation = Reconciliation()
        opened = reconciliation.start(
            Scope("a_%/", since=day - timedelta(days=1), until=day + timedelta(days=1))
        )
        seen = [r for r in everything if r.source_id == "a_%/4"]
        await delivered.remember(seen, [], reconciliation)
        # Survives the cursor round trip.
        again = Reconciliation.of(reconciliation.to_json())
        assert again.scopes == {"a_%/": opened}
        finished = again.finish("a_%/")
        assert finished is not None
        assert await delivered.sweep_unseen(finished) == 2
        left = {r.source_id for r in everything} - {"a_%/1", "a_%/5"}
        assert await world.remembered() == left
        if sink.kind == "embedded":
            assert await world.stored() == left
        else:
            with world.engine.lock:
                assert world.engine.deleted == [
                    record_id("calendar", USER, "a_%/1"),
                    record_id("calendar", USER, "a_%/5"),
                ]
        assert await delivered.sweep_gone("a_%/") == 3
        assert await world.remembered() == {"aX%/1", "A_%/1"}
        async with world.services.db.session() as session:
            kept = await session.execute(
                select(DeliveredRow.source_id).where(DeliveredRow.provider == "gmail")
            )
            assert set(kept.scalars()) == {"a_%/1", "a_%/9"}
    finally:
        await world.services.aclose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_0003_remembers_what_was_delivered_before_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    upgrade(settings, "0002")
    engine = create_engine(sync_url(settings))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO ingestion_memories (id, user_id, source, source_id, type, "
                    "content, occurred_at, metadata, content_hash, updated_at) VALUES "
                    "('calendar:u:1:c@x/e1', 'u:1', 'calendar', 'c@x/e1', 'event', 'x', "
                    "'2026-01-02 03:04:05', '{}', 'h', '2026-01-02 03:04:05')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO ingestion_sent_hashes (user_id, record_id, content_hash, sent_at) "
                    "VALUES ('u:1', 'gmail:u:1:18b0a', 'h', '2026-01-02 03:04:05'), "
                    "('u:1', 'calendar:u:1:c@x/e1', 'h', '2026-01-02 03:04:05'), "
                    "('u:1', 'junk', 'h', '2026-01-02 03:04:05')"
                )
            )
        upgrade(settings)
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT user_id, provider, source_id, occurred_at, generation "
                    "FROM ingestion_delivered ORDER BY provider"
                )
            ).all()
        assert [(r[0], r[1], r[2], r[3] is not None, r[4]) for r in rows] == [
            ("u:1", "calendar", "c@x/e1", True, 0),
            ("u:1", "gmail", "18b0a", False, 0),
        ]
    finally:
        engine.dispose()


def test_stored_open_scopes_survive_a_round_trip_with_and_without_bounds() -> None:
    """An enumeration interrupted by a crash is resumed from the stored state: an unbounded
    scope (no since/until) must be read back as open, not dropped as unreadable."""
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    state = Reconciliation()
    state.start(Scope("gmail:u:"))
    state.start(Scope("calendar:u:c@x/", since=since, until=since + timedelta(days=1)))
    stored = state.to_json()
    again = Reconciliation.of(stored)
    assert again.to_json() == stored
    unbounded = again.scopes["gmail:u:"]
    assert (unbounded.since, unbounded.until) == (None, None)
    bounded = again.scopes["calendar:u:c@x/"]
    assert (bounded.since, bounded.until) == (since, since + timedelta(days=1))
    # Unreadable entries count as no enumeration in progress; readable ones are kept.
    broken = {"scopes": {**stored["scopes"], "x:": {"since": "yesterday", "generation": 1}}}
    assert set(Reconciliation.of(broken).scopes) == {"gmail:u:", "calendar:u:c@x/"}
