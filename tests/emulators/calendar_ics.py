"""Real Google Calendar data for the Calendar emulator: `.ics` exports made by Google Calendar.

The test suite of the PyPI package `recurring-ical-events` ships calendars exported from Google
Calendar (`PRODID:-//Google Inc//Google Calendar 70.9054//EN`): weekly series with EXDATEs,
moved occurrences (RECURRENCE-ID), all-day series, several time zones, German text. The sdist
is reference material (`uv run python -m tests.reference`, see tests/reference.py), and each
VEVENT is turned into the event resource
the API would serve for it (ids, `iCalUID`, `recurrence` lines, `recurringEventId` and
`originalStartTime` of exceptions, `htmlLink`), with the `icalendar` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from tests import reference
from tests.emulators.calendar import html_link, instance_id

__all__ = ["GoogleExport", "events_from_ics", "google_exports"]

GOOGLE_PRODID = "Google Inc//Google Calendar"
_RESPONSES = {
    "ACCEPTED": "accepted",
    "DECLINED": "declined",
    "TENTATIVE": "tentative",
    "NEEDS-ACTION": "needsAction",
}


@dataclass(frozen=True)
class GoogleExport:
    name: str
    text: str


def google_exports() -> list[GoogleExport]:
    """Every Google Calendar export in the package (`ReferenceMissing` when not fetched)."""
    folder = reference.path("recurring-ical-events")
    exports = {}
    for file in sorted(folder.rglob("*.ics")):
        text = file.read_text("utf-8", errors="replace")
        if GOOGLE_PRODID in text:
            exports.setdefault(file.stem, GoogleExport(file.stem, text))
    return list(exports.values())


def events_from_ics(text: str, calendar_id: str) -> tuple[str | None, str, list[dict[str, Any]]]:
    """(calendar name, time zone, API event resources) of one Google Calendar export."""
    calendar = icalendar.Calendar.from_ical(text)
    zone_name = str(calendar.get("X-WR-TIMEZONE") or "UTC")
    name = str(calendar.get("X-WR-CALNAME")) if calendar.get("X-WR-CALNAME") else None
    zone = ZoneInfo(zone_name)
    events: list[dict[str, Any]] = []
    seen: set[str] = set()
    for component in calendar.walk("VEVENT"):
        event = _event(component, calendar_id, zone)
        if event["id"] not in seen:
            seen.add(event["id"])
            events.append(event)
    return name, zone_name, events


def _when(value: Any, zone: ZoneInfo) -> dict[str, Any]:
    moment = value.dt
    if isinstance(moment, datetime):
        tzid = value.params.get("TZID")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        when: dict[str, Any] = {"dateTime": moment.astimezone(zone).isoformat()}
        if tzid:
            when["timeZone"] = str(tzid)
        return when
    return {"date": moment.isoformat()}


def _stamp(component: Any, key: str) -> str | None:
    value = component.get(key)
    if value is None:
        return None
    try:  # real exports hold oddities such as CREATED:00001231T000000Z
        moment = value.dt
    except (ValueError, icalendar.error.BrokenCalendarProperty):
        return None
    if isinstance(moment, date) and not isinstance(moment, datetime):
        moment = datetime.combine(moment, datetime.min.time(), UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _person(value: Any) -> dict[str, Any]:
    email = str(value).removeprefix("mailto:").removeprefix("MAILTO:")
    person: dict[str, Any] = {"email": email}
    if value.params.get("CN"):
        person["displayName"] = str(value.params["CN"])
    return person


def _event(component: Any, calendar_id: str, zone: ZoneInfo) -> dict[str, Any]:
    uid = str(component.get("UID"))
    master_id = uid.removesuffix("@google.com")
    start = _when(component.get("DTSTART"), zone)
    if component.get("DTEND") is not None:
        end = _when(component.get("DTEND"), zone)
    elif component.get("DURATION") is not None:
        moment = component.get("DTSTART").dt + component.get("DURATION").dt
        end = (
            {"date": moment.isoformat()}
            if "date" in start
            else {**start, "dateTime": moment.astimezone(zone).isoformat()}
        )
    else:
        first = component.get("DTSTART").dt
        end = {"date": (first + timedelta(days=1)).isoformat()} if "date" in start else dict(start)
    event: dict[str, Any] = {
        "kind": "calendar#event",
        "id": master_id,
        "status": str(component.get("STATUS") or "CONFIRMED").lower(),
        "created": _stamp(component, "CREATED") or _stamp(component, "DTSTAMP"),
        "updated": _stamp(component, "LAST-MODIFIED") or _stamp(component, "DTSTAMP"),
        "summary": str(component.get("SUMMARY")) if component.get("SUMMARY") else None,
        "start": start,
        "end": end,
        "iCalUID": uid,
        "sequence": int(component.get("SEQUENCE") or 0),
        "eventType": "default",
        "creator": {"email": calendar_id},
        "organizer": {"email": calendar_id},
    }
    for key, api_key in (("DESCRIPTION", "description"), ("LOCATION", "location")):
        if str(component.get(key) or "").strip():
            event[api_key] = str(component.get(key))
    if component.get("ORGANIZER") is not None:
        event["organizer"] = _person(component.get("ORGANIZER"))
    attendees = component.get("ATTENDEE")
    if attendees is not None:
        attendees = attendees if isinstance(attendees, list) else [attendees]
        event["attendees"] = [
            {
                **_person(a),
                "responseStatus": _RESPONSES.get(str(a.params.get("PARTSTAT")), "needsAction"),
            }
            for a in attendees
        ]
    lines = [
        line
        for line in component.content_lines()
        if line.split(":", 1)[0].split(";", 1)[0] in ("RRULE", "EXDATE", "RDATE", "EXRULE")
    ]
    if lines:
        event["recurrence"] = lines
    if component.get("RECURRENCE-ID") is not None:
        original = _when(component.get("RECURRENCE-ID"), zone)
        event["id"] = instance_id(master_id, original)
        event["recurringEventId"] = master_id
        event["originalStartTime"] = original
    event["htmlLink"] = html_link(event["id"], calendar_id)
    return {k: v for k, v in event.items() if v is not None}
