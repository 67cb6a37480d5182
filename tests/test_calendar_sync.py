"""Calendar sync end to end in-process: emulator → provider → engine → embedded store."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stamina
from sqlalchemy import select

from ingestion.config import Settings
from ingestion.errors import RetryableError
from ingestion.providers.base import FetchOptions
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.db import upgrade
from ingestion.storage.models import MemoryRow
from ingestion.sync import SyncSummary
from tests import reference
from tests.clock import AnchoredClock
from tests.emulators import RunningServer, serve
from tests.emulators.calendar import CalendarState, Fault, create_app
from tests.emulators.calendar_ics import events_from_ics, google_exports

USER = "u1"
TOKEN = "ya29.calendar-test-token"
#: The services' clock: every date below is written relative to it (November and December of
#: its year), so the first-sync window (NOW - CALENDAR_PAST_DAYS .. NOW + CALENDAR_FUTURE_DAYS)
#: holds them whatever day the suite runs.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WEEKLY_START = {"dateTime": "2026-11-02T09:00:00+01:00", "timeZone": "Europe/Berlin"}


@dataclass
class World:
    state: CalendarState
    services: Services

    async def sync(self, *, full: bool = False) -> SyncSummary:
        return await self.services.engine.run("calendar", USER, FetchOptions(force_full_sync=full))

    async def records(self) -> dict[str, MemoryRow]:
        async with self.services.db.session() as session:
            rows = (
                await session.execute(select(MemoryRow).where(MemoryRow.user_id == USER))
            ).scalars()
            return {row.source_id: row for row in rows}

    def requests_since(self, mark: int) -> list[Any]:
        return self.state.requests[mark:]


@pytest.fixture
def emulator() -> Iterator[tuple[CalendarState, RunningServer]]:
    state = CalendarState(tokens={TOKEN: USER})
    server = serve(create_app(state))
    yield state, server
    server.stop()


def make_settings(database: Path, url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{database}",
        calendar_api_url=url,
        calendar_quota_requests_per_minute=60_000,
        **extra,
    )


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; each test works on its own copy."""
    path = tmp_path_factory.mktemp("calendar-template") / "ingestion.db"
    upgrade(make_settings(path, "http://127.0.0.1:9"))
    return path


@pytest.fixture
async def world(
    tmp_path: Path,
    migrated_db: Path,
    emulator: tuple[CalendarState, RunningServer],
    request: pytest.FixtureRequest,
) -> AsyncIterator[World]:
    state, server = emulator
    extra = getattr(request, "param", {})
    database = tmp_path / "ingestion.db"
    shutil.copyfile(migrated_db, database)
    services = await Services.open(
        make_settings(database, server.url, **extra), migrate=False, clock=AnchoredClock(NOW)
    )
    async with services.db.session() as session:
        await save_account(session, user_id=USER, provider_id="google", access_token=TOKEN)
    try:
        yield World(state, services)
    finally:
        await services.aclose()


def seed_calendars(state: CalendarState) -> dict[str, list[str]]:
    """Five calendars: three mirrored, a free/busy one and a hidden one (not mirrored)."""
    state.add_calendar(USER, "u1@example.com", "Me", time_zone="Europe/Berlin", primary=True)
    state.add_calendar(USER, "team@group.calendar.google.com", "Team", access_role="writer")
    state.add_calendar(
        USER, "en.usa#holiday@group.v.calendar.google.com", "Holidays", access_role="reader"
    )
    state.add_calendar(USER, "boss@example.com", "Boss", access_role="freeBusyReader")
    state.add_calendar(USER, "old@group.calendar.google.com", "Old", hidden=True)
    ids: dict[str, list[str]] = {}
    for calendar_id in list(state.calendars):
        ids[calendar_id] = [
            state.insert_event(
                calendar_id,
                summary=f"{calendar_id[:4]} event {n}",
                start={"dateTime": f"2026-12-0{n + 1}T10:00:00Z"},
                end={"dateTime": f"2026-12-0{n + 1}T11:00:00Z"},
            )["id"]
            for n in range(3)
        ]
    return ids


MIRRORED = (
    "u1@example.com",
    "team@group.calendar.google.com",
    "en.usa#holiday@group.v.calendar.google.com",
)


async def test_full_sync_mirrors_every_readable_visible_calendar(world: World) -> None:
    ids = seed_calendars(world.state)
    summary = await world.sync()
    records = await world.records()
    expected = {f"{cal}/{eid}" for cal in MIRRORED for eid in ids[cal]}
    assert set(records) == expected
    assert summary.upserted == 9
    assert summary.deleted == 0
    assert summary.stats["requests"] == 1 + 3
    row = records[f"u1@example.com/{ids['u1@example.com'][0]}"]
    assert row.id == f"calendar:{USER}:u1@example.com/{ids['u1@example.com'][0]}"
    assert row.type == "event"
    assert row.meta["calendarId"] == "u1@example.com"
    assert row.url
    assert row.url.startswith("https://www.google.com/calendar/event?eid=")


async def test_nothing_new_costs_one_request_per_calendar_and_upserts_nothing(
    world: World,
) -> None:
    seed_calendars(world.state)
    await world.sync()
    mark = len(world.state.requests)
    summary = await world.sync()
    sent = world.requests_since(mark)
    assert summary.upserted == 0
    assert summary.deleted == 0
    assert summary.fetched == 0
    assert len(sent) == 1 + 3
    lists = [r for r in sent if r.path.endswith("/calendarList")]
    assert len(lists) == 1
    assert "syncToken" not in lists[0].params  # the list is read whole: the truth each time
    assert all("syncToken" in r.params for r in sent if r not in lists)
    assert all("timeMin" not in r.params for r in sent)


async def test_incremental_upserts_changes_and_deletes_cancelled_events(world: World) -> None:
    ids = seed_calendars(world.state)
    await world.sync()
    team = "team@group.calendar.google.com"
    world.state.update_event(team, ids[team][0], summary="Renamed planning")
    world.state.delete_event(team, ids[team][1])
    added = world.state.insert_event(
        "u1@example.com",
        summary="Dentist",
        start={"dateTime": "2026-12-20T08:00:00-05:00", "timeZone": "America/New_York"},
        end={"dateTime": "2026-12-20T09:00:00-05:00", "timeZone": "America/New_York"},
    )
    summary = await world.sync()
    records = await world.records()
    assert summary.upserted == 2
    assert summary.deleted == 1
    assert records[f"{team}/{ids[team][0]}"].title == "Renamed planning"
    assert f"{team}/{ids[team][1]}" not in records
    dentist = records[f"u1@example.com/{added['id']}"]
    assert dentist.occurred_at.isoformat().startswith("2026-12-20T13:00:00")
    assert dentist.meta["timeZone"] == "America/New_York"


async def test_expired_sync_token_resyncs_that_calendar_alone_without_duplicates(
    world: World,
) -> None:
    ids = seed_calendars(world.state)
    await world.sync()
    before = await world.records()
    team = "team@group.calendar.google.com"
    world.state.expire_sync_tokens(team)
    world.state.delete_event(team, ids[team][2])  # deleted while the token is dead
    mark = len(world.state.requests)
    summary = await world.sync()
    sent = world.requests_since(mark)
    records = await world.records()
    assert summary.stats["fullResyncs"] == 1
    assert [r.status for r in sent if team in r.path] == [410, 200]
    full = [r for r in sent if "timeMin" in r.params]
    assert len(full) == 1
    assert team in full[0].path
    assert full[0].params["showDeleted"] == "true"
    assert set(records) == set(before) - {f"{team}/{ids[team][2]}"}
    # The recovered token works: the next sync is incremental again.
    mark = len(world.state.requests)
    summary = await world.sync()
    assert summary.upserted == 0
    events = [r for r in world.requests_since(mark) if "/events" in r.path]
    assert all("syncToken" in r.params for r in events)


async def test_recurring_series_with_moved_and_cancelled_occurrences(world: World) -> None:
    state = world.state
    calendar = "u1@example.com"
    state.add_calendar(USER, calendar, "Me", time_zone="Europe/Berlin", primary=True)
    master = state.insert_event(
        calendar,
        summary="Standup",
        start=WEEKLY_START,
        end={"dateTime": "2026-11-02T09:15:00+01:00", "timeZone": "Europe/Berlin"},
        recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=20"],
        attendees=[
            {"email": "ana@example.com", "displayName": "Ana", "responseStatus": "accepted"},
            {"email": "bo@example.com", "responseStatus": "declined"},
        ],
    )
    moved = state.move_instance(
        calendar,
        master["id"],
        {"dateTime": "2026-11-09T09:00:00+01:00", "timeZone": "Europe/Berlin"},
        start={"dateTime": "2026-11-10T14:00:00+01:00", "timeZone": "Europe/Berlin"},
        end={"dateTime": "2026-11-10T14:15:00+01:00", "timeZone": "Europe/Berlin"},
    )
    cancelled = state.cancel_instance(
        calendar,
        master["id"],
        {"dateTime": "2026-11-16T09:00:00+01:00", "timeZone": "Europe/Berlin"},
    )
    summary = await world.sync()
    records = await world.records()
    assert summary.upserted == 3  # the series stays one master, not 20 occurrences
    series = records[f"{calendar}/{master['id']}"]
    assert series.meta["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=20"]
    assert "Repeats: weekly on Monday, 20 times" in series.content
    assert "Ana <ana@example.com> (accepted)" in series.content
    assert "bo@example.com (declined)" in series.content
    exception = records[f"{calendar}/{moved['id']}"]
    assert exception.meta["recurringEventId"] == master["id"]
    assert exception.meta["originalStartTime"]["dateTime"] == "2026-11-09T09:00:00+01:00"
    assert exception.occurred_at.isoformat().startswith("2026-11-10T13:00:00")
    gone = records[f"{calendar}/{cancelled}"]
    assert gone.title == "Cancelled: Standup"
    assert gone.meta["status"] == "cancelled"
    assert gone.meta["recurringEventId"] == master["id"]

    # A later cancellation arrives alone: the series' title is looked up once.
    later = state.cancel_instance(
        calendar,
        master["id"],
        {"dateTime": "2026-11-23T09:00:00+01:00", "timeZone": "Europe/Berlin"},
    )
    mark = len(state.requests)
    await world.sync()
    assert (await world.records())[f"{calendar}/{later}"].title == "Cancelled: Standup"
    assert sum(1 for r in world.requests_since(mark) if r.path.endswith(master["id"])) == 1

    # Deleting the series removes the master and every exception record.
    state.delete_event(calendar, master["id"])
    summary = await world.sync()
    assert await world.records() == {}
    assert summary.deleted == 4


async def test_first_sync_window_is_measured_from_the_services_clock(world: World) -> None:
    """CALENDAR_PAST_DAYS / _FUTURE_DAYS (365) around the injected clock, not the wall clock."""
    calendar = "u1@example.com"
    world.state.add_calendar(USER, calendar, "Me", primary=True)

    def at(days: int) -> dict[str, str]:
        return {"dateTime": (NOW + timedelta(days=days)).isoformat().replace("+00:00", "Z")}

    inside = [world.state.insert_event(calendar, start=at(d), end=at(d)) for d in (-360, 360)]
    for days in (-370, 370):
        world.state.insert_event(calendar, start=at(days), end=at(days))
    mark = len(world.state.requests)
    await world.sync()
    [listing] = [r for r in world.requests_since(mark) if "timeMin" in r.params]
    assert listing.params["timeMin"].startswith((NOW - timedelta(days=365)).date().isoformat())
    assert listing.params["timeMax"].startswith((NOW + timedelta(days=365)).date().isoformat())
    assert set(await world.records()) == {f"{calendar}/{e['id']}" for e in inside}


async def test_time_zones_and_all_day_events(world: World) -> None:
    state = world.state
    calendar = "u1@example.com"
    state.add_calendar(USER, calendar, "Me", time_zone="Asia/Tokyo", primary=True)
    day = state.insert_event(
        calendar, summary="Holiday", start={"date": "2026-12-24"}, end={"date": "2026-12-25"}
    )
    trip = state.insert_event(
        calendar, start={"date": "2026-12-27"}, end={"date": "2026-12-30"}, location="Kyoto"
    )
    call = state.insert_event(
        calendar,
        summary="Call",
        start={"dateTime": "2026-12-01T18:30:00-08:00", "timeZone": "America/Los_Angeles"},
        end={"dateTime": "2026-12-01T19:00:00-08:00", "timeZone": "America/Los_Angeles"},
        description="<p>Agenda:<br><b>budget</b> &amp; plans</p>",
    )
    await world.sync()
    records = await world.records()
    holiday = records[f"{calendar}/{day['id']}"]
    assert holiday.occurred_at.isoformat().startswith("2026-12-24T00:00:00")
    assert holiday.meta["allDay"] is True
    assert holiday.meta["start"] == {"date": "2026-12-24"}
    assert "When: Thursday 24 December 2026 (all day)" in holiday.content
    away = records[f"{calendar}/{trip['id']}"]
    assert away.title == "(no title)"
    assert "Sunday 27 December 2026 to Tuesday 29 December 2026 (all day)" in away.content
    assert "Where: Kyoto" in away.content
    phone = records[f"{calendar}/{call['id']}"]
    assert phone.occurred_at.isoformat().startswith("2026-12-02T02:30:00")
    assert phone.meta["allDay"] is False
    assert phone.meta["timeZone"] == "America/Los_Angeles"
    assert "Tuesday 1 December 2026, 18:30 to 19:00 (America/Los_Angeles)" in phone.content
    assert "Agenda:\nbudget & plans" in phone.content
    assert "<p>" not in phone.content


async def test_calendar_removed_from_list_has_its_events_deleted(world: World) -> None:
    ids = seed_calendars(world.state)
    await world.sync()
    team, holidays = MIRRORED[1], MIRRORED[2]
    world.state.unsubscribe(USER, team)  # still readable: listed one last time
    world.state.set_hidden(USER, holidays)  # hidden: no longer mirrored
    summary = await world.sync()
    records = await world.records()
    assert summary.stats["calendarsRemoved"] == 2
    assert summary.deleted == 6
    assert {sid.split("/")[0] for sid in records} == {"u1@example.com"}
    assert len(records) == len(ids["u1@example.com"])
    # Nothing more to do afterwards.
    summary = await world.sync()
    assert summary.deleted == 0
    assert summary.stats["requests"] == 2
    assert summary.pages == 1  # unchanged calendars share one checkpoint


async def test_unreadable_removed_calendar_is_reported_not_failed(world: World) -> None:
    seed_calendars(world.state)
    await world.sync()
    world.state.delete_calendar("team@group.calendar.google.com")
    summary = await world.sync()
    assert summary.status == "ok"
    assert summary.stats["calendarsRemoved"] == 1
    assert summary.stats["calendarsUnreadable"] == 1


async def test_calendar_list_paging_and_a_new_calendar_get_a_full_sync(world: World) -> None:
    state = world.state
    for n in range(251):  # more than one calendarList page (at most 250 per page)
        role = "reader" if n == 250 else "freeBusyReader"  # free/busy: listed, never read
        state.add_calendar(USER, f"c{n:03d}@group.calendar.google.com", f"C{n}", access_role=role)
    state.insert_event(
        "c250@group.calendar.google.com",
        summary="Last one",
        start={"date": "2026-12-01"},
        end={"date": "2026-12-02"},
    )
    summary = await world.sync()
    assert summary.upserted == 1
    assert state.count("/calendarList") == 2
    state.add_calendar(USER, "new@group.calendar.google.com", "New", access_role="reader")
    state.insert_event(
        "new@group.calendar.google.com",
        summary="Fresh",
        start={"date": "2026-12-03"},
        end={"date": "2026-12-04"},
    )
    summary = await world.sync()
    assert summary.upserted == 1
    assert summary.stats["calendarsAdded"] == 1


@pytest.mark.parametrize("world", [{"calendar_page_size": 2}], indirect=True)
async def test_interrupted_backfill_resumes_from_its_page(world: World) -> None:
    state = world.state
    state.add_calendar(USER, "u1@example.com", "Me", primary=True)
    for n in range(7):
        state.insert_event(
            "u1@example.com",
            summary=f"e{n}",
            start={"dateTime": f"2026-12-1{n}T10:00:00Z"},
            end={"dateTime": f"2026-12-1{n}T11:00:00Z"},
        )
    # Let two pages through, then fail every attempt of the third.
    calls = {"n": 0}
    original = state._fault_for

    def fail_third_page(path: str) -> Fault | None:
        if "/events" in path:
            calls["n"] += 1
            if calls["n"] >= 3:
                return Fault(503)
        return original(path)

    state._fault_for = fail_third_page  # type: ignore[method-assign]
    with stamina.set_testing(True, attempts=2), pytest.raises(RetryableError):
        await world.sync()
    assert len(await world.records()) == 4
    state._fault_for = original  # type: ignore[method-assign]
    mark = len(state.requests)
    summary = await world.sync()
    resumed = world.requests_since(mark)
    assert "pageToken" in resumed[1].params  # continued, not restarted
    assert summary.upserted == 3
    assert len(await world.records()) == 7


async def test_throttles_are_retried_and_a_scope_403_is_an_error(world: World) -> None:
    seed_calendars(world.state)
    world.state.inject(Fault(403, reason="rateLimitExceeded", path_contains="/calendarList"))
    world.state.inject(Fault(429, reason="rateLimitExceeded", path_contains="/events"))
    world.state.inject(Fault(403, reason="userRateLimitExceeded", path_contains="/events"))
    world.state.inject(Fault(503, path_contains="/events"))
    with stamina.set_testing(True, attempts=5):
        summary = await world.sync()
    assert summary.status == "ok"
    assert summary.upserted == 9
    assert world.state.count(status=403) == 2
    assert world.state.count(status=503) == 1

    world.state.scopes[TOKEN] = "openid email https://www.googleapis.com/auth/gmail.readonly"
    with pytest.raises(Exception, match="insufficient authentication scopes"):
        await world.sync()
    state = await world.services.engine.state.load(USER, "calendar")
    assert state.status == "error"
    assert state.last_error
    assert "insufficient authentication scopes" in state.last_error


GOOGLE_EXPORTS = {
    "machbar_16_feb_2019": "machbar@group.calendar.google.com",  # Europe/Berlin, EXDATE, moves
    "issue_62_moved_event_2": "test@group.calendar.google.com",  # Sydney, all-day series
    "issue_48_dst": "school@group.calendar.google.com",  # America/Chicago across DST
    "issue_173_only_modifications_error": "paris@group.calendar.google.com",  # 186 exceptions
}


def seed_google_exports(state: CalendarState) -> dict[str, list[dict[str, Any]]]:
    reference.require("recurring-ical-events")
    exports = {e.name: e for e in google_exports()}
    seeded: dict[str, list[dict[str, Any]]] = {}
    for name, calendar_id in GOOGLE_EXPORTS.items():
        title, zone, events = events_from_ics(exports[name].text, calendar_id)
        state.add_calendar(USER, calendar_id, title or name, time_zone=zone, access_role="reader")
        state.bulk_insert(calendar_id, [dict(e) for e in events])
        seeded[calendar_id] = events
    return seeded


@pytest.mark.parametrize("world", [{"calendar_past_days": 4000}], indirect=True)
async def test_real_google_calendar_exports(world: World) -> None:
    """Exports made by Google Calendar (2019 and 2023), served as the API would serve them."""
    seeded = seed_google_exports(world.state)
    summary = await world.sync()
    records = await world.records()
    expected = {f"{cal}/{e['id']}" for cal, events in seeded.items() for e in events}
    assert set(records) == expected
    assert summary.upserted == len(expected)

    machbar = GOOGLE_EXPORTS["machbar_16_feb_2019"]
    thursday = next(
        r
        for sid, r in records.items()
        if sid.startswith(machbar)
        and r.title == "Montessori Schulklasse"
        and "BYDAY=TH" in "".join(r.meta["recurrence"])
    )
    assert "Repeats: weekly on Thursday (except 1 date)" in thursday.content
    assert thursday.meta["timeZone"] == "Europe/Berlin"
    assert thursday.occurred_at.isoformat().startswith("2019-02-28T07:30:00")

    sydney = GOOGLE_EXPORTS["issue_62_moved_event_2"]
    moved = records[f"{sydney}/6ep37v20d728v14rcgn17v9is6_20230817"]
    assert moved.meta["recurringEventId"] == "6ep37v20d728v14rcgn17v9is6"
    assert moved.meta["originalStartTime"] == {"date": "2023-08-17"}
    assert moved.meta["allDay"] is True
    assert moved.occurred_at.isoformat().startswith("2023-08-16T00:00:00")
    timed = records[f"{sydney}/7v3ju5ft4je5iq18nfdk2s3spk_20230815T040000Z"]
    assert timed.occurred_at.isoformat().startswith("2023-08-14T04:00:00")
    assert "Monday 14 August 2023, 14:00 to 15:00 (Australia/Sydney)" in timed.content

    summary = await world.sync()
    assert summary.upserted == 0
    assert summary.stats["requests"] == 1 + len(GOOGLE_EXPORTS)


async def test_calendar_list_is_read_whole_whatever_its_tokens(world: World) -> None:
    ids = seed_calendars(world.state)
    await world.sync()
    team = MIRRORED[1]
    world.state.expire_sync_tokens()  # the calendar list's tokens: never sent, never a 410
    world.state.unsubscribe(USER, team)
    mark = len(world.state.requests)
    summary = await world.sync()
    lists = [r for r in world.requests_since(mark) if r.path.endswith("/calendarList")]
    assert [r.status for r in lists] == [200]
    assert "syncToken" not in lists[0].params
    assert summary.stats["calendarsRemoved"] == 1
    records = await world.records()
    assert not any(sid.startswith(f"{team}/") for sid in records)
    assert len(records) == len(ids[MIRRORED[0]]) + len(ids[MIRRORED[2]])
