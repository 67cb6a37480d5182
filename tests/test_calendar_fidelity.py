"""Calendar as the real API behaves: list tokens that hide ACL and property changes, the past
window of `BACKFILL_DAYS`, and deleted series whose exceptions are not reported one by one.

In-process against the Calendar emulator (fixtures of tests/test_calendar_sync.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.test_calendar_sync import (  # noqa: F401 (fixtures)
    MIRRORED,
    USER,
    WEEKLY_START,
    World,
    emulator,
    migrated_db,
    seed_calendars,
    world,
)


async def test_access_lowered_to_free_busy_stops_mirroring(world: World) -> None:  # noqa: F811
    ids = seed_calendars(world.state)
    await world.sync()
    team = MIRRORED[1]
    assert any(sid.startswith(f"{team}/") for sid in await world.records())
    world.state.set_role(USER, team, "freeBusyReader")  # an ACL change: no list token sees it

    summary = await world.sync()
    records = await world.records()
    assert not any(sid.startswith(f"{team}/") for sid in records)
    assert summary.stats["calendarsRemoved"] == 1
    others = {f"{cal}/{eid}" for cal in (MIRRORED[0], MIRRORED[2]) for eid in ids[cal]}
    assert set(records) == others
    # And it stays out: the next sync lists nothing of it.
    mark = len(world.state.requests)
    await world.sync()
    assert not any(team in r.path for r in world.requests_since(mark))


async def test_renamed_calendar_gives_its_records_the_new_name(world: World) -> None:  # noqa: F811
    ids = seed_calendars(world.state)
    await world.sync()
    team = MIRRORED[1]
    row = (await world.records())[f"{team}/{ids[team][0]}"]
    assert "Calendar: Team" in row.content
    world.state.rename_calendar(team, "Platform team")  # a calendar property: no token sees it

    summary = await world.sync()
    assert summary.stats["calendarsRenamed"] == 1
    records = await world.records()
    for event_id in ids[team]:
        assert "Calendar: Platform team" in records[f"{team}/{event_id}"].content
    assert "Calendar: Me" in records[f"{MIRRORED[0]}/{ids[MIRRORED[0]][0]}"].content


def _window_events(world: World, calendar: str) -> dict[str, str]:  # noqa: F811
    now = datetime.now(UTC).replace(microsecond=0)
    made = {}
    for days in (10, 100, 300):
        start = now - timedelta(days=days)
        made[f"{days}"] = world.state.insert_event(
            calendar,
            summary=f"{days} days ago",
            start={"dateTime": start.isoformat().replace("+00:00", "Z")},
            end={"dateTime": (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")},
        )["id"]
    return made


@pytest.mark.parametrize("world", [{"backfill_days": 30}], indirect=True)
async def test_past_window_defaults_to_backfill_days(world: World) -> None:  # noqa: F811
    calendar = "u1@example.com"
    world.state.add_calendar(USER, calendar, "Me", primary=True)
    made = _window_events(world, calendar)
    await world.sync()
    assert set(await world.records()) == {f"{calendar}/{made['10']}"}


@pytest.mark.parametrize("world", [{"backfill_days": 30, "calendar_past_days": 200}], indirect=True)
async def test_calendar_past_days_overrides_when_set(world: World) -> None:  # noqa: F811
    calendar = "u1@example.com"
    world.state.add_calendar(USER, calendar, "Me", primary=True)
    made = _window_events(world, calendar)
    await world.sync()
    assert set(await world.records()) == {f"{calendar}/{made[d]}" for d in ("10", "100")}


@pytest.mark.parametrize("world", [{"backfill_days": 1_000_000}], indirect=True)
async def test_huge_backfill_window_starts_at_the_earliest_date(world: World) -> None:  # noqa: F811
    calendar = "u1@example.com"
    world.state.add_calendar(USER, calendar, "Me", primary=True)
    made = _window_events(world, calendar)
    summary = await world.sync()
    assert summary.status == "ok"
    assert len(await world.records()) == len(made)
    listing = next(r for r in world.state.requests if "timeMin" in r.params)
    assert listing.params["timeMin"] == "1900-01-01T00:00:00Z"


@pytest.mark.parametrize("reported", [False, True])
async def test_deleted_series_takes_its_exceptions_along(world: World, reported: bool) -> None:  # noqa: F811
    state = world.state
    calendar = "u1@example.com"
    state.add_calendar(USER, calendar, "Me", time_zone="Europe/Berlin", primary=True)
    master = state.insert_event(
        calendar,
        summary="Standup",
        start=WEEKLY_START,
        end={"dateTime": "2026-11-02T09:15:00+01:00", "timeZone": "Europe/Berlin"},
        recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=20"],
    )
    moved = state.move_instance(
        calendar,
        master["id"],
        {"dateTime": "2026-11-09T09:00:00+01:00", "timeZone": "Europe/Berlin"},
        start={"dateTime": "2026-11-10T14:00:00+01:00", "timeZone": "Europe/Berlin"},
        end={"dateTime": "2026-11-10T14:15:00+01:00", "timeZone": "Europe/Berlin"},
        summary="Standup (moved)",
    )
    cancelled = state.cancel_instance(
        calendar,
        master["id"],
        {"dateTime": "2026-11-16T09:00:00+01:00", "timeZone": "Europe/Berlin"},
    )
    other = state.insert_event(
        calendar,
        summary="Lunch",
        start={"dateTime": "2026-11-03T12:00:00Z"},
        end={"dateTime": "2026-11-03T13:00:00Z"},
    )
    await world.sync()
    assert set(await world.records()) == {
        f"{calendar}/{master['id']}",
        f"{calendar}/{moved['id']}",
        f"{calendar}/{cancelled}",
        f"{calendar}/{other['id']}",
    }

    mark = len(state.requests)
    state.delete_event(calendar, master["id"], report_exceptions=reported)
    summary = await world.sync()
    listed = [r for r in world.requests_since(mark) if r.path.endswith("/events")]
    assert len(listed) == 1  # the incremental listing alone, nothing looked up per exception
    assert set(await world.records()) == {f"{calendar}/{other['id']}"}
    assert summary.deleted == 3  # the master, and both exceptions (reported or swept)
