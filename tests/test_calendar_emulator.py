"""The Calendar emulator answers like the API reference says (the provider's tests rely on it)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.emulators import serve
from tests.emulators.calendar import GONE_ERROR, CalendarState, create_app
from tests.emulators.calendar_ics import events_from_ics

USER = "u1"
TOKEN = "ya29.emulator"
CAL = "team@group.calendar.google.com"


@pytest.fixture
def api() -> Iterator[tuple[CalendarState, httpx.Client]]:
    state = CalendarState(tokens={TOKEN: USER})
    server = serve(create_app(state))
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        yield state, client
    finally:
        client.close()
        server.stop()


def events_path(calendar_id: str = CAL) -> str:
    return f"/calendars/{quote(calendar_id, safe='')}/events"


def seed(state: CalendarState, n: int) -> list[str]:
    state.add_calendar(USER, CAL, "Team", time_zone="Europe/Paris")
    return [
        state.insert_event(
            CAL,
            summary=f"e{i}",
            start={"dateTime": "2026-12-01T10:00:00Z"},
            end={"dateTime": "2026-12-01T11:00:00Z"},
        )["id"]
        for i in range(n)
    ]


def test_bad_token_is_401_in_googles_shape(api: tuple[CalendarState, httpx.Client]) -> None:
    _, client = api
    response = client.get("/users/me/calendarList", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 401
    assert error["status"] == "UNAUTHENTICATED"
    assert error["errors"][0]["reason"] == "authError"


def test_pages_carry_a_sync_token_only_on_the_last_page(
    api: tuple[CalendarState, httpx.Client],
) -> None:
    state, client = api
    ids = seed(state, 5)
    seen: list[str] = []
    params: dict[str, str] = {"maxResults": "2"}
    while True:
        body = client.get(events_path(), params=params).json()
        seen += [e["id"] for e in body["items"]]
        assert ("nextPageToken" in body) != ("nextSyncToken" in body)
        if "nextSyncToken" in body:
            break
        params = {"maxResults": "2", "pageToken": body["nextPageToken"]}
    assert sorted(seen) == sorted(ids)
    assert body["timeZone"] == "Europe/Paris"

    state.delete_event(CAL, ids[0])
    changed = client.get(events_path(), params={"syncToken": body["nextSyncToken"]}).json()
    assert changed["items"] == [
        {
            "kind": "calendar#event",
            "etag": changed["items"][0]["etag"],
            "id": ids[0],
            "status": "cancelled",
        }
    ]


def test_sync_token_rules(api: tuple[CalendarState, httpx.Client]) -> None:
    state, client = api
    seed(state, 1)
    token = client.get(events_path()).json()["nextSyncToken"]
    mixed = client.get(
        events_path(), params={"syncToken": token, "timeMin": "2026-01-01T00:00:00Z"}
    )
    assert mixed.status_code == 400
    state.expire_sync_tokens(CAL)
    expired = client.get(events_path(), params={"syncToken": token})
    assert expired.status_code == 410
    assert expired.json() == GONE_ERROR
    assert GONE_ERROR["error"]["errors"][0]["reason"] == "fullSyncRequired"


def test_cancelled_occurrences_are_listed_but_cancelled_events_are_not(
    api: tuple[CalendarState, httpx.Client],
) -> None:
    state, client = api
    state.add_calendar(USER, CAL, "Team")
    master = state.insert_event(
        CAL,
        summary="Weekly",
        start={"dateTime": "2026-12-07T10:00:00Z"},
        end={"dateTime": "2026-12-07T11:00:00Z"},
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"],
    )
    gone = state.insert_event(
        CAL, summary="Gone", start={"date": "2026-12-01"}, end={"date": "2026-12-02"}
    )
    state.delete_event(CAL, gone["id"])
    occurrence = state.cancel_instance(CAL, master["id"], {"dateTime": "2026-12-14T10:00:00Z"})
    assert occurrence == f"{master['id']}_20261214T100000Z"
    listed = {e["id"]: e for e in client.get(events_path()).json()["items"]}
    assert set(listed) == {master["id"], occurrence}
    assert listed[occurrence]["recurringEventId"] == master["id"]
    with_deleted = client.get(events_path(), params={"showDeleted": "true"}).json()["items"]
    assert gone["id"] in {e["id"] for e in with_deleted}
    # The series ended before the window: not listed.
    window = {"timeMin": "2027-01-01T00:00:00Z", "timeMax": "2027-12-31T00:00:00Z"}
    assert client.get(events_path(), params=window).json()["items"] == []


def test_calendar_list_sync_token_reports_removed_and_hidden_entries(
    api: tuple[CalendarState, httpx.Client],
) -> None:
    state, client = api
    state.add_calendar(USER, "a@example.com", "A", primary=True)
    state.add_calendar(USER, "b@example.com", "B", access_role="reader")
    state.add_calendar(USER, "h@example.com", "H", hidden=True)
    first = client.get("/users/me/calendarList").json()
    assert [e["id"] for e in first["items"]] == ["a@example.com", "b@example.com"]
    assert first["items"][0]["primary"] is True
    state.unsubscribe(USER, "b@example.com")
    state.set_hidden(USER, "a@example.com")
    changes = client.get("/users/me/calendarList", params={"syncToken": first["nextSyncToken"]})
    items = {e["id"]: e for e in changes.json()["items"]}
    assert items["b@example.com"] == {
        "kind": "calendar#calendarListEntry",
        "etag": items["b@example.com"]["etag"],
        "id": "b@example.com",
        "deleted": True,
    }
    assert items["a@example.com"]["hidden"] is True
    # An unsubscribed calendar is still readable; a deleted one is not.
    assert client.get(events_path("b@example.com")).status_code == 200
    state.delete_calendar("b@example.com")
    assert client.get(events_path("b@example.com")).json()["error"]["errors"][0]["reason"] == (
        "notFound"
    )


def test_google_export_becomes_api_events() -> None:
    text = (
        "BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\n"
        "X-WR-CALNAME:T\r\nX-WR-TIMEZONE:Europe/Berlin\r\n"
        "BEGIN:VEVENT\r\nDTSTART;TZID=Europe/Berlin:20230808T140000\r\n"
        "DTEND;TZID=Europe/Berlin:20230808T150000\r\nRRULE:FREQ=WEEKLY;BYDAY=TU\r\n"
        "UID:abc123@google.com\r\nSUMMARY:Weekly\r\n"
        "ATTENDEE;CN=Ana;PARTSTAT=ACCEPTED:mailto:ana@example.com\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nDTSTART;TZID=Europe/Berlin:20230816T100000\r\n"
        "DTEND;TZID=Europe/Berlin:20230816T110000\r\n"
        "RECURRENCE-ID;TZID=Europe/Berlin:20230815T140000\r\n"
        "UID:abc123@google.com\r\nSUMMARY:Weekly (moved)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    name, zone, events = events_from_ics(text, "c@example.com")
    assert (name, zone) == ("T", "Europe/Berlin")
    master, moved = events
    assert master["id"] == "abc123"
    assert master["iCalUID"] == "abc123@google.com"
    assert master["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=TU"]
    assert master["start"] == {"dateTime": "2023-08-08T14:00:00+02:00", "timeZone": "Europe/Berlin"}
    assert master["attendees"] == [
        {"email": "ana@example.com", "displayName": "Ana", "responseStatus": "accepted"}
    ]
    assert moved["id"] == "abc123_20230815T120000Z"
    assert moved["recurringEventId"] == "abc123"
    assert moved["originalStartTime"]["dateTime"] == "2023-08-15T14:00:00+02:00"
    eid = master["htmlLink"].split("eid=")[1]
    assert base64.urlsafe_b64decode(eid + "==").decode() == "abc123 c@example.com"
