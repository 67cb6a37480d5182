"""The adversarial corpus: items anyone can send a user, built to hurt a naive transform.

Each entry is built here (nothing is stored in the repository) and is valid enough that the
real API would hand it over: Gmail `format=full` payloads, Calendar events, GitHub commits and
issues, X posts. `tests/test_adversarial.py` runs every one through its transform and through a
real sync.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MB = 1_000_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def gmail_message(
    message_id: str, body: str | bytes, mime: str = "text/plain", subject: str = "hostile"
) -> dict[str, Any]:
    """A `format=full` message with one body part."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    return {
        "id": message_id,
        "threadId": message_id,
        "labelIds": ["INBOX"],
        "snippet": "snippet of " + subject,
        "internalDate": "1772600767000",
        "payload": {
            "partId": "",
            "mimeType": mime,
            "filename": "",
            "headers": [
                {"name": "From", "value": "Mallory <mallory@example.com>"},
                {"name": "To", "value": "you@example.com"},
                {"name": "Subject", "value": subject},
                {"name": "Content-Type", "value": f"{mime}; charset=utf-8"},
            ],
            "body": {"size": len(data), "data": b64url(data)},
        },
    }


# --- bodies ----------------------------------------------------------------------------------


def wrote_lines() -> str:
    """60,000 lines ending in "wrote:": each one used to rescan every line after it."""
    return "new text on top\n" + "x wrote:\n" * 60_000


def attribution_line() -> str:
    """One 600 KB line that almost matches a German attribution ("Am … schrieb …:")."""
    return "Hello\n\nAm " + "schrieb " * 75_000 + "\n> quoted\n"


def on_wrote_line() -> str:
    """One 600 KB line that almost matches "On … wrote:"."""
    return "Hello\n\nOn " + "wrote: x " * 66_000 + "\n> quoted\n"


def quote_wall() -> str:
    """New text above a 100,000-line quoted wall."""
    return "the reply\n\nOn Mon, Bob wrote:\n" + "> quoted line\n" * 100_000


def nested_html() -> str:
    """HTML nested 20,000 elements deep."""
    return "<html><body>" + "<div>" * 20_000 + "deep text" + "</div>" * 20_000 + "</body></html>"


def html_tables() -> str:
    """2 MB of HTML tables."""
    row = "<tr><td>cell one</td><td>cell two</td><td><a href='https://e.x/'>link</a></td></tr>"
    rows = row * (2 * MB // len(row))
    return f"<html><body><table>{rows}</table></body></html>"


def unclosed_tags() -> str:
    """30 KB of `<a` openings never closed: a backtracking tag regex scans to the end from each."""
    return "<a " * 10_000


def big_text() -> str:
    """A 10 MB text part."""
    return ("All work and no play makes Jack a dull boy. " * 230_000)[: 10 * MB]


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    provider: str
    build: Callable[[], Any]


def gmail_cases() -> Iterator[Case]:
    bodies: list[tuple[str, Callable[[], str], str]] = [
        ("60,000 'x wrote:' lines", wrote_lines, "text/plain"),
        ("600 KB 'Am … schrieb' line", attribution_line, "text/plain"),
        ("600 KB 'On … wrote:' line", on_wrote_line, "text/plain"),
        ("100,000-line quote wall", quote_wall, "text/plain"),
        ("HTML nested 20,000 deep", nested_html, "text/html"),
        ("2 MB of HTML tables", html_tables, "text/html"),
        ("30 KB of unclosed tags", unclosed_tags, "text/html"),
        ("10 MB text part", big_text, "text/plain"),
    ]
    for index, (name, body, mime) in enumerate(bodies):
        yield Case(
            f"gmail: {name}",
            "gmail",
            lambda body=body, mime=mime, index=index: gmail_message(f"a{index:015x}", body(), mime),
        )
    yield Case("gmail: From of 100,000 nested comments", "gmail", nested_comments_sender)
    yield Case("gmail: 200 parts with 20 KB Content-Type headers", "gmail", many_costly_parts)


def nested_comments_sender() -> dict[str, Any]:
    """A From header of 100,000 nested comments (the e-mail parser recurses once per level)."""
    message = gmail_message("c1", "hello")
    headers = message["payload"]["headers"]
    headers[0] = {"name": "From", "value": "(" * 100_000 + "mallory@example.com"}
    return message


def many_costly_parts() -> dict[str, Any]:
    """200 text parts, each with a 20 KB Content-Type of RFC 2231 parameters to parse."""
    message = gmail_message("c2", "")
    params = "text/plain; " + "charset*0*=utf-8''%e9; " * 900
    message["payload"] = {
        "partId": "",
        "mimeType": "multipart/mixed",
        "headers": [{"name": "Subject", "value": "parts"}],
        "parts": [
            {
                "partId": str(i),
                "mimeType": "text/plain",
                "headers": [{"name": "Content-Type", "value": params}],
                "body": {"size": 5, "data": b64url(b"part ")},
            }
            for i in range(200)
        ],
    }
    return message


# The longest legal id: base32hex (a-v, 0-9), 5 to 1,024 characters (Google Calendar API
# reference, Events resource, `id`; also in the official client libraries' docs).
LONG_EVENT_ID = "e" + "0123456789abcdefghijklmnopqrstuv" * 32  # 1,025: cut below
LONG_EVENT_ID = LONG_EVENT_ID[:1024]


def event(event_id: str = "evt1", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": event_id,
        "status": "confirmed",
        "summary": "hostile event",
        "start": {"dateTime": "2026-03-04T10:00:00Z"},
        "end": {"dateTime": "2026-03-04T11:00:00Z"},
        "updated": "2026-03-01T00:00:00Z",
    }
    base.update(fields)
    return base


def calendar_cases() -> Iterator[Case]:
    yield Case("calendar: 1,024-character event id", "calendar", lambda: event(LONG_EVENT_ID))
    yield Case(
        "calendar: RRULE INTERVAL=²",
        "calendar",
        lambda: event("rrule", recurrence=["RRULE:FREQ=WEEKLY;INTERVAL=\u00b2"]),
    )
    yield Case(
        "calendar: year-1 start with an offset",
        "calendar",
        lambda: event(
            "year1",
            start={"dateTime": "0001-01-01T00:00:00+05:00"},
            end={"dateTime": "0001-01-01T01:00:00+05:00"},
        ),
    )
    yield Case(
        "calendar: 30 KB of unclosed tags in the description",
        "calendar",
        lambda: event("tags", description=unclosed_tags()),
    )
    yield Case(
        "calendar: 2 MB HTML description",
        "calendar",
        lambda: event("tables", description=html_tables()),
    )
    yield Case(
        "calendar: 10,000 attendees",
        "calendar",
        lambda: event(
            "crowd",
            attendees=[
                {"email": f"p{i}@example.com", "displayName": "x" * 100} for i in range(10_000)
            ],
        ),
    )


def commit(files: list[dict[str, Any]], message: str = "subject\n\nbody") -> dict[str, Any]:
    return {
        "sha": "0" * 40,
        "html_url": "https://github.com/o/r/commit/" + "0" * 40,
        "commit": {
            "message": message,
            "author": {"name": "a", "email": "a@x", "date": "2026-03-04T10:00:00Z"},
            "committer": {"name": "a", "date": "2026-03-04T10:00:00Z"},
        },
        "parents": [],
    }


def github_cases() -> Iterator[Case]:
    many_files = [
        {"filename": f"src/f{i}.py", "status": "modified", "additions": 1, "deletions": 1,
         "patch": "@@ -1 +1 @@\n-a\n+b"}
        for i in range(3_000)
    ]  # fmt: skip
    yield Case("github: commit of 3,000 files", "github", lambda: (commit(many_files), many_files))
    huge_patch = [
        {"filename": "big.txt", "status": "added", "additions": 1, "deletions": 0,
         "patch": "+" + "y" * (10 * MB)}
    ]  # fmt: skip
    yield Case("github: 10 MB patch", "github", lambda: (commit(huge_patch), huge_patch))
    yield Case(
        "github: 10 MB commit message",
        "github",
        lambda: (commit([], message=big_text()), []),
    )
    yield Case(
        "github: issue with a 10 MB body and 5,000 comments",
        "github",
        lambda: (
            {
                "number": 1,
                "title": "t" * 100_000,
                "body": big_text(),
                "created_at": "2026-03-04T10:00:00Z",
                "user": {"login": "mallory"},
            },
            [{"user": {"login": "c"}, "body": "z" * 2_000, "created_at": "x"}] * 5_000,
        ),
    )


def tweet_cases() -> Iterator[Case]:
    text = "t.co " * 200_000
    urls = [{"url": f"https://t.co/{i}", "expanded_url": "https://example.com/" + "p" * 50}
            for i in range(20_000)]  # fmt: skip
    yield Case(
        "twitter: 1 MB text with 20,000 link entities",
        "twitter",
        lambda: {
            "id": "1",
            "text": text,
            "author_id": "9",
            "created_at": "2026-03-04T10:00:00Z",
            "entities": {"urls": urls},
        },
    )
    yield Case(
        "twitter: year-1 creation time with an offset",
        "twitter",
        lambda: {
            "id": "2",
            "text": "old",
            "author_id": "9",
            "created_at": "0001-01-01T00:00:00+01:00",
        },
    )


def all_cases() -> list[Case]:
    return [*gmail_cases(), *calendar_cases(), *github_cases(), *tweet_cases()]
