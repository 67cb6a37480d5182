"""Calendar event → memory record (design §6).

- `sourceId` = `{calendarId}/{eventId}` (event ids are unique only within a calendar);
- `title` = the summary, `(no title)` when absent; a cancelled occurrence of a series is titled
  `Cancelled: {series summary}`;
- `content` = readable text: when (with the time zone), the recurrence in words where simple,
  where, calendar, organizer, attendees with their responses, the description (HTML converted
  to text);
- `occurredAt` = the start: an all-day event is its date at 00:00 UTC (`allDay: true`), a timed
  event its instant in UTC, with the original `timeZone` kept in metadata (an instant outside
  years 1 to 9999 in UTC is clamped);
- hostile input stays cheap (`ingestion.providers.limits`): the description is read up to
  `TEXT_MAX_CHARS` (HTML up to `HTML_MAX_CHARS`, defanged, and only stripped of its tags past
  the item's time budget), at most `MAX_ATTENDEES` attendees are listed, and malformed rule
  parts (`INTERVAL=²`) are shown as the raw rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingestion.memory.record import MemoryRecord, to_utc
from ingestion.providers import html
from ingestion.providers.limits import (
    HTML_MAX_CHARS,
    TEXT_MAX_CHARS,
    cap,
    item_transform,
)

__all__ = ["describe_recurrence", "event_record", "event_start", "html_to_text", "source_id"]

NO_TITLE = "(no title)"
# A tag, or an entity. `[^<>]*` stops at the next "<", so the scan from each "<" ends there and
# the whole search is linear (the former `[^>]*` rescanned to the end from every unclosed "<a").
_HTML_HINT = re.compile(r"<[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>|&[a-zA-Z]+;|&#[0-9]+;")
#: Attendees listed one by one in content and metadata (Google allows a few thousand).
MAX_ATTENDEES = 2_000
_DAYS = {"MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday",
         "FR": "Friday", "SA": "Saturday", "SU": "Sunday"}  # fmt: skip
_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}
_FREQ_UNITS = {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month", "YEARLY": "year"}


def source_id(calendar_id: str, event_id: str) -> str:
    return f"{calendar_id}/{event_id}"


def html_to_text(value: str) -> str:
    """Plain text of a description; Google stores many descriptions as HTML (cut to
    `HTML_MAX_CHARS` first; past the item's time budget only its tags are stripped)."""
    if not _HTML_HINT.search(value):
        return value.strip()
    value, _ = cap(value, HTML_MAX_CHARS)
    return html.html_to_text(value)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _parse_dt(when: Mapping[str, Any], fallback_zone: str | None) -> datetime | None:
    raw = when.get("dateTime")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(when.get("timeZone") or fallback_zone) or UTC)
    return parsed


def _parse_date(when: Mapping[str, Any]) -> date | None:
    raw = when.get("date")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def event_start(event: Mapping[str, Any], calendar_zone: str | None = None) -> datetime | None:
    """The event's start in UTC (an all-day date at 00:00 UTC); `None` when it has none."""
    start = event.get("start") or event.get("originalStartTime") or {}
    day = _parse_date(start)
    if day is not None:
        return datetime.combine(day, time(0, 0), tzinfo=UTC)
    moment = _parse_dt(start, calendar_zone)
    return to_utc(moment) if moment else None


def _describe_when(event: Mapping[str, Any], calendar_zone: str | None) -> str | None:
    start = event.get("start") or {}
    end = event.get("end") or {}
    first_day, last_day = _parse_date(start), _parse_date(end)
    if first_day is not None:
        # The end date of an all-day event is exclusive.
        if last_day is not None and (last_day - first_day).days > 1:
            last = date.fromordinal(last_day.toordinal() - 1)
            return f"{_day(first_day)} to {_day(last)} (all day)"
        return f"{_day(first_day)} (all day)"
    begin = _parse_dt(start, calendar_zone)
    if begin is None:
        return None
    zone_name = start.get("timeZone") or calendar_zone
    zone = _zone(zone_name)
    local = _in_zone(begin, zone)
    finish = _parse_dt(end, calendar_zone)
    label = zone_name or local.strftime("UTC%z")
    text = f"{_day(local.date())}, {local:%H:%M}"
    if finish is not None:
        local_end = _in_zone(finish, zone)
        if local_end.date() == local.date():
            text += f" to {local_end:%H:%M}"
        else:
            text += f" to {_day(local_end.date())}, {local_end:%H:%M}"
    return f"{text} ({label})"


def _in_zone(moment: datetime, zone: ZoneInfo | None) -> datetime:
    """`moment` in `zone`; as it is when that would leave years 1 to 9999."""
    if zone is None:
        return moment
    try:
        return moment.astimezone(zone)
    except (OverflowError, ValueError):
        return moment


def _number(value: str) -> int | None:
    """A plain ASCII decimal (`str.isdigit` also accepts "²", which `int` refuses)."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def _day(value: date) -> str:
    return f"{value:%A} {value.day} {value:%B %Y}"


def describe_recurrence(lines: list[str] | None) -> str | None:
    """The recurrence in words for simple rules (`every 2 weeks on Monday and Wednesday,
    10 times`); the raw RRULE text when it is not simple; `None` without a rule."""
    if not lines:
        return None
    rules = [line for line in lines if line.upper().startswith("RRULE:")]
    if not rules:
        return None
    described = [_describe_rule(rule[6:]) for rule in rules]
    exdates = sum(
        len(line.split(":", 1)[1].split(","))
        for line in lines
        if line.upper().startswith("EXDATE") and ":" in line
    )
    text = "; ".join(described)
    if exdates:
        text += f" (except {exdates} date{'s' if exdates != 1 else ''})"
    return text


def _describe_rule(rule: str) -> str:
    parts: dict[str, str] = {}
    for piece in rule.split(";"):
        key, _, value = piece.partition("=")
        parts[key.strip().upper()] = value.strip()
    known = {"FREQ", "INTERVAL", "BYDAY", "COUNT", "UNTIL", "WKST", "BYMONTHDAY", "BYMONTH"}
    freq = parts.get("FREQ", "")
    if freq not in _FREQ_UNITS or set(parts) - known:
        return f"RRULE:{rule}"
    interval = _number(parts.get("INTERVAL", "1"))
    if interval is None:
        return f"RRULE:{rule}"
    unit = _FREQ_UNITS[freq]
    text = f"every {unit}" if interval == 1 else f"every {interval} {unit}s"
    if freq == "DAILY" and interval == 1:
        text = "daily"
    elif freq == "WEEKLY" and interval == 1:
        text = "weekly"
    by_day = [d for d in parts.get("BYDAY", "").split(",") if d]
    if by_day:
        names = [_day_name(d) for d in by_day]
        if any(n is None for n in names):
            return f"RRULE:{rule}"
        text += " on " + _join([n for n in names if n])
    if parts.get("BYMONTHDAY"):
        text += f" on day {parts['BYMONTHDAY']}"
    if parts.get("BYMONTH") and freq == "YEARLY":
        months = []
        for m in parts["BYMONTH"].split(","):
            month = _number(m)
            if month is None or not 1 <= month <= 12:
                return f"RRULE:{rule}"
            months.append(date(2000, month, 1).strftime("%B"))
        text += " in " + _join(months)
    count = _number(parts.get("COUNT", ""))
    if count is not None:
        text += f", {count} time{'s' if count != 1 else ''}"
    if parts.get("UNTIL"):
        until = _until(parts["UNTIL"])
        text += f", until {until}" if until else f", until {parts['UNTIL']}"
    return text


def _day_name(token: str) -> str | None:
    match = re.fullmatch(r"([+-]?[0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)", token.upper())
    if not match:
        return None
    name = _DAYS[match.group(2)]
    if match.group(1):
        ordinal = _ORDINALS.get(int(match.group(1)))
        if ordinal is None:
            return None
        return f"the {ordinal} {name}"
    return name


def _until(value: str) -> str | None:
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y%m%dT%H%M%S", "%Y%m%d"):
        try:
            return _day(datetime.strptime(value, fmt).date())
        except ValueError:
            continue
    return None


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _person(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    return {"email": value.get("email"), "name": value.get("displayName")}


def _person_text(value: Mapping[str, Any]) -> str:
    name, email = value.get("displayName"), value.get("email")
    if name and email:
        return f"{name} <{email}>"
    return str(name or email or "someone")


@item_transform
def event_record(
    user_id: str,
    calendar_id: str,
    event: Mapping[str, Any],
    *,
    calendar_name: str | None = None,
    calendar_zone: str | None = None,
    series: Mapping[str, Any] | None = None,
) -> MemoryRecord:
    """The record of one event (or of a cancelled occurrence, given its `series` master)."""
    status = event.get("status") or "confirmed"
    cancelled_occurrence = status == "cancelled" and bool(event.get("recurringEventId"))
    summary = event.get("summary") or (series or {}).get("summary") or None
    title = summary or NO_TITLE
    lines: list[str] = []
    if cancelled_occurrence:
        title = f"Cancelled: {title}"
        original = event.get("originalStartTime") or {}
        when = _describe_when({"start": original}, calendar_zone)
        lines.append(f"Cancelled occurrence of the recurring event {summary or NO_TITLE!r}.")
        if when:
            lines.append(f"Was: {when}")
    else:
        when = _describe_when(event, calendar_zone)
        if when:
            lines.append(f"When: {when}")
        repeats = describe_recurrence(event.get("recurrence"))
        if repeats:
            lines.append(f"Repeats: {repeats}")
        if event.get("recurringEventId"):
            lines.append("Changed occurrence of a recurring event.")
        if status == "tentative":
            lines.append("Status: tentative")
    if event.get("location"):
        lines.append(f"Where: {event['location']}")
    if calendar_name:
        lines.append(f"Calendar: {calendar_name}")
    organizer = event.get("organizer") or (series or {}).get("organizer")
    if organizer and not cancelled_occurrence:
        lines.append(f"Organizer: {_person_text(organizer)}")
    attendees = [a for a in event.get("attendees") or [] if isinstance(a, dict)]
    more_attendees = max(0, len(attendees) - MAX_ATTENDEES)
    attendees = attendees[:MAX_ATTENDEES]
    if attendees:
        lines.append("Attendees:")
        for attendee in attendees:
            response = attendee.get("responseStatus") or "needsAction"
            optional = ", optional" if attendee.get("optional") else ""
            lines.append(
                f"- {_person_text(attendee)} ({_RESPONSES.get(response, response)}{optional})"
            )
        if more_attendees:
            lines.append(f"- … and {more_attendees} more")
    description = event.get("description")
    omitted = 0
    if isinstance(description, str) and description.strip():
        description, omitted = cap(description, TEXT_MAX_CHARS)
        if _HTML_HINT.search(description):
            omitted += max(0, len(description) - HTML_MAX_CHARS)
        lines.append("")
        lines.append(html_to_text(description))

    start = event.get("start") or event.get("originalStartTime") or {}
    all_day = "date" in start and "dateTime" not in start
    occurred = event_start(event, calendar_zone) or _fallback_time(event)
    metadata: dict[str, Any] = {
        "calendarId": calendar_id,
        "eventId": event.get("id"),
        "iCalUID": event.get("iCalUID"),
        "start": dict(event.get("start") or {}),
        "end": dict(event.get("end") or {}),
        "allDay": all_day,
        "timeZone": None if all_day else (start.get("timeZone") or calendar_zone),
        "location": event.get("location"),
        "attendees": [
            {
                "email": a.get("email"),
                "name": a.get("displayName"),
                "responseStatus": a.get("responseStatus"),
            }
            for a in attendees
        ],
        "organizer": _person(organizer),
        "recurrence": [str(line)[:2_000] for line in list(event.get("recurrence") or [])[:100]],
        "recurringEventId": event.get("recurringEventId"),
        "originalStartTime": dict(event.get("originalStartTime") or {}) or None,
        "status": status,
        "eventType": event.get("eventType") or "default",
    }
    return MemoryRecord.build(
        source="calendar",
        user_id=user_id,
        source_id=source_id(calendar_id, str(event["id"])),
        type="event",
        title=title,
        content="\n".join(lines),
        occurred_at=occurred,
        url=event.get("htmlLink") or (series or {}).get("htmlLink"),
        metadata=metadata,
        content_omitted=omitted,
    )


_RESPONSES = {
    "accepted": "accepted",
    "declined": "declined",
    "tentative": "maybe",
    "needsAction": "no answer yet",
}


def _fallback_time(event: Mapping[str, Any]) -> datetime:
    for key in ("updated", "created"):
        raw = event.get(key)
        if isinstance(raw, str):
            try:
                return to_utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))
            except ValueError:
                continue
    return datetime(1970, 1, 1, tzinfo=UTC)
