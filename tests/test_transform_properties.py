"""Property-based: whatever a provider sends, each transform returns a valid record or raises
`MalformedItem` (the item is then skipped and counted); it never raises anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.errors import MalformedItem
from ingestion.memory.record import MemoryRecord
from ingestion.providers.calendar.transform import event_record
from ingestion.providers.github.transform import commit_record, issue_record
from ingestion.providers.gmail.transform import transform as gmail_transform
from ingestion.providers.twitter.transform import Includes, to_record
from tests.adversarial import b64url

# Bounded: each property runs in a few seconds; no example database is written.
BOUNDED = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
markup = st.text(alphabet=st.sampled_from(list("<>/&#;!-?ab =\"'\n>x1²\u00e9\ud800")), max_size=200)
timestamps = st.sampled_from(
    [
        "2026-03-04T10:00:00Z",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "2026-02-30T00:00:00Z",
        "not a time",
        "",
    ]
) | st.text(max_size=30)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The plausible value, or any JSON value at all."""
    return strategy | json_values


def assert_valid(result: Any) -> None:
    record = getattr(result, "record", result)
    assert isinstance(record, MemoryRecord)
    json.dumps(record.to_wire(), allow_nan=False)


def run(transform: Any, *args: Any, **kwargs: Any) -> None:
    try:
        result = transform(*args, **kwargs)
    except MalformedItem:
        return
    assert_valid(result)


# --- Gmail -------------------------------------------------------------------------------------

headers = st.lists(
    st.fixed_dictionaries(
        {
            "name": maybe(st.sampled_from(["From", "To", "Cc", "Subject", "Content-Type", "Date"])),
            "value": maybe(
                st.text(max_size=80)
                | st.sampled_from(
                    [
                        "=?utf-8?b?w6k=?= <a@b>",
                        '"((((" <a@b>, =?x?q?=ZZ?=',
                        "text/html; charset=unknown-8",
                        "text/plain; charset*=utf-8''%e9",
                    ]
                )
            ),
        }
    ),
    max_size=5,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "data": maybe(st.binary(max_size=300).map(b64url) | markup),
        "size": maybe(st.integers(0, 10**9)),
        "attachmentId": maybe(st.text(max_size=10)),
    },
)
parts = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "mimeType": maybe(
                st.sampled_from(["text/plain", "text/html", "application/pdf", "message/rfc822"])
            ),
            "headers": maybe(headers),
            "body": maybe(bodies),
            "filename": maybe(st.text(max_size=10)),
            "partId": maybe(st.text(max_size=4)),
        },
    ),
    lambda children: st.fixed_dictionaries(
        {
            "mimeType": st.sampled_from(
                ["multipart/mixed", "multipart/alternative", "message/rfc822"]
            ),
            "parts": st.lists(children, max_size=3),
        },
        optional={"headers": headers},
    ),
    max_leaves=6,
)
messages = st.fixed_dictionaries(
    {"id": maybe(st.text(min_size=1, max_size=16))},
    optional={
        "payload": maybe(parts),
        "internalDate": maybe(st.integers(-(10**20), 10**20).map(str)),
        "snippet": maybe(st.text(max_size=40)),
        "labelIds": maybe(st.lists(st.text(max_size=8), max_size=3)),
        "threadId": json_values,
    },
)


@BOUNDED
@given(messages)
def test_gmail_transform(message: dict[str, Any]) -> None:
    run(gmail_transform, message, "u1")


# --- Calendar ----------------------------------------------------------------------------------

whens = st.fixed_dictionaries(
    {},
    optional={
        "dateTime": maybe(timestamps),
        "date": maybe(st.sampled_from(["2026-03-04", "0001-01-01", "2026-13-01"])),
        "timeZone": maybe(st.sampled_from(["Europe/Berlin", "Nowhere/Land", "", "UTC"])),
    },
)
events = st.fixed_dictionaries(
    {"id": maybe(st.text(min_size=1, max_size=30))},
    optional={
        "status": maybe(st.sampled_from(["confirmed", "tentative", "cancelled"])),
        "summary": json_values,
        "description": maybe(markup),
        "location": json_values,
        "start": maybe(whens),
        "end": maybe(whens),
        "originalStartTime": maybe(whens),
        "recurrence": maybe(
            st.lists(
                st.sampled_from(
                    [
                        "RRULE:FREQ=WEEKLY;INTERVAL=\u00b2",
                        "RRULE:FREQ=MONTHLY;BYDAY=\u00b21MO",
                        "RRULE:FREQ=YEARLY;BYMONTH=\u0663;COUNT=\u00b9",
                        "RRULE:FREQ=DAILY;UNTIL=99999999T999999Z",
                        "EXDATE:",
                        "RRULE:",
                    ]
                )
                | st.text(max_size=40),
                max_size=3,
            )
        ),
        "attendees": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "email": json_values,
                        "displayName": json_values,
                        "responseStatus": json_values,
                        "optional": json_values,
                    },
                ),
                max_size=3,
            )
        ),
        "organizer": json_values,
        "recurringEventId": json_values,
        "updated": maybe(timestamps),
        "htmlLink": json_values,
    },
)


@BOUNDED
@given(events, st.none() | events, st.sampled_from([None, "Europe/Berlin", "Bad/Zone"]))
def test_calendar_event_record(event: dict[str, Any], series: Any, zone: str | None) -> None:
    run(event_record, "u1", "me@example.com", event, calendar_zone=zone, series=series)


# --- GitHub ------------------------------------------------------------------------------------

files = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "filename": json_values,
            "status": json_values,
            "additions": maybe(st.integers(0, 10**6)),
            "deletions": maybe(st.integers(0, 10**6)),
            "patch": maybe(st.text(max_size=100)),
            "previous_filename": json_values,
        },
    ),
    max_size=4,
)
commits = st.fixed_dictionaries(
    {"sha": maybe(st.text(min_size=1, max_size=40))},
    optional={
        "commit": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "message": json_values,
                    "author": maybe(st.fixed_dictionaries({}, optional={"date": timestamps})),
                    "committer": json_values,
                },
            )
        ),
        "author": json_values,
        "parents": json_values,
        "stats": json_values,
        "html_url": json_values,
    },
)
comments = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "user": json_values,
            "body": json_values,
            "path": json_values,
            "line": json_values,
            "created_at": json_values,
        },
    ),
    max_size=3,
)
issues = st.fixed_dictionaries(
    {"number": maybe(st.integers(1, 10**6))},
    optional={
        "title": json_values,
        "body": maybe(st.text(max_size=100)),
        "user": json_values,
        "labels": json_values,
        "assignees": json_values,
        "pull_request": json_values,
        "created_at": maybe(timestamps),
        "comments": json_values,
        "state": json_values,
    },
)


@BOUNDED
@given(commits, st.none() | files, st.integers(0, 500))
def test_github_commit_record(commit: dict[str, Any], changed: Any, budget: int) -> None:
    run(commit_record, user_id="u1", repo="o/r", commit=commit, files=changed, patch_budget=budget)


@BOUNDED
@given(issues, st.none() | json_values, comments, comments)
def test_github_issue_record(issue: dict[str, Any], pull: Any, said: Any, reviews: Any) -> None:
    run(
        issue_record,
        user_id="u1",
        repo="o/r",
        issue=issue,
        pull=pull if isinstance(pull, dict) else None,
        comments=said,
        review_comments=reviews,
    )


# --- X -------------------------------------------------------------------------------------------

url_entities = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "url": maybe(st.sampled_from(["https://t.co/a", "a", ""])),
            "expanded_url": json_values,
            "unwound_url": json_values,
        },
    ),
    max_size=3,
)
tweets = st.fixed_dictionaries(
    {"id": maybe(st.text(min_size=1, max_size=20))},
    optional={
        "text": maybe(st.text(max_size=100)),
        "author_id": json_values,
        "created_at": maybe(timestamps),
        "entities": maybe(st.fixed_dictionaries({}, optional={"urls": url_entities})),
        "note_tweet": json_values,
        "referenced_tweets": json_values,
        "public_metrics": json_values,
        "attachments": json_values,
    },
)
includes = (
    st.fixed_dictionaries(
        {},
        optional={
            "users": maybe(
                st.lists(st.fixed_dictionaries({"id": st.text(max_size=3)}), max_size=2)
            ),
            "tweets": json_values,
            "media": json_values,
        },
    )
    | json_values
)


@BOUNDED
@given(tweets, includes, st.sampled_from(["tweets", "mentions", "likes"]))
def test_twitter_to_record(tweet: dict[str, Any], extra: Any, timeline: str) -> None:
    def build() -> MemoryRecord:
        return to_record(
            tweet,
            Includes.of(extra),
            user_id="u1",
            account_user_id="9",
            account_username="me",
            timeline=timeline,
        )

    run(build)
