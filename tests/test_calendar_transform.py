"""Calendar event → memory record: titles, times, recurrence in words, HTML descriptions."""

from __future__ import annotations

import httpx
import pytest

from ingestion.providers.calendar.client import classify
from ingestion.providers.calendar.transform import describe_recurrence, event_record, html_to_text


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (["RRULE:FREQ=WEEKLY;BYDAY=MO"], "weekly on Monday"),
        (
            ["RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;COUNT=10"],
            "every 2 weeks on Monday and Wednesday, 10 times",
        ),
        (["RRULE:FREQ=MONTHLY;BYDAY=-1FR"], "every month on the last Friday"),
        (["RRULE:FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=14"], "every year on day 14 in March"),
        (["RRULE:FREQ=DAILY;UNTIL=20261231T235959Z"], "daily, until Thursday 31 December 2026"),
        (
            ["RRULE:FREQ=WEEKLY;BYDAY=TH", "EXDATE;TZID=Europe/Berlin:20190307T083000"],
            "weekly on Thursday (except 1 date)",
        ),
        (["RRULE:FREQ=WEEKLY;BYSETPOS=2;BYDAY=MO"], "RRULE:FREQ=WEEKLY;BYSETPOS=2;BYDAY=MO"),
        (None, None),
        (["EXDATE:20260101"], None),
    ],
)
def test_recurrence_in_words(lines: list[str] | None, words: str | None) -> None:
    assert describe_recurrence(lines) == words


def test_html_description_becomes_text_and_plain_text_stays() -> None:
    html = '<p>Join: <a href="https://meet.example/abc">meeting</a><br>Bring <b>notes</b></p>'
    text = html_to_text(html)
    assert "<" not in text.replace("<https://meet.example/abc>", "")
    assert "Bring notes" in text
    assert "https://meet.example/abc" in text
    assert html_to_text("  a < b and c > d  ") == "a < b and c > d"


def test_event_without_summary_and_with_attendees() -> None:
    record = event_record(
        "u1",
        "c@example.com",
        {
            "id": "e1",
            "status": "tentative",
            "htmlLink": "https://www.google.com/calendar/event?eid=x",
            "start": {"dateTime": "2026-03-29T01:30:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-03-29T03:30:00+02:00", "timeZone": "Europe/Berlin"},
            "organizer": {"email": "boss@example.com", "displayName": "Boss"},
            "attendees": [
                {"email": "a@example.com", "responseStatus": "needsAction", "optional": True},
                {"email": "b@example.com", "displayName": "Bea", "responseStatus": "tentative"},
            ],
        },
        calendar_name="Work",
        calendar_zone="Europe/Berlin",
    )
    assert record.title == "(no title)"
    assert record.source_id == "c@example.com/e1"
    assert record.id == "calendar:u1:c@example.com/e1"
    assert record.occurred_at.isoformat() == "2026-03-29T00:30:00+00:00"
    assert "Sunday 29 March 2026, 01:30 to 03:30 (Europe/Berlin)" in record.content
    assert "Organizer: Boss <boss@example.com>" in record.content
    assert "- a@example.com (no answer yet, optional)" in record.content
    assert "- Bea <b@example.com> (maybe)" in record.content
    assert "Status: tentative" in record.content
    assert record.metadata["attendees"][1] == {
        "email": "b@example.com",
        "name": "Bea",
        "responseStatus": "tentative",
    }
    assert record.metadata["organizer"] == {"email": "boss@example.com", "name": "Boss"}
    assert record.metadata["status"] == "tentative"


def _response(status: int, reason: str | None = None) -> httpx.Response:
    body = {"error": {"code": status, "message": "m", "errors": [{"reason": reason}]}}
    return httpx.Response(status, json=body if reason else {})


@pytest.mark.parametrize(
    ("status", "reason", "throttled"),
    [
        (403, "rateLimitExceeded", True),
        (403, "userRateLimitExceeded", True),
        (403, "quotaExceeded", True),
        (429, "rateLimitExceeded", True),
        (503, None, True),
        (403, "insufficientPermissions", False),
        (403, "forbidden", False),
        (404, "notFound", False),
        (410, "fullSyncRequired", False),
    ],
)
def test_classify_calendar_throttles(status: int, reason: str | None, throttled: bool) -> None:
    assert (classify(_response(status, reason)) is not None) is throttled
