"""The per-type `metadata` of a memory record (design §6), as typed dictionaries.

These name the keys each record type carries at least; a provider may add more. They are
`TypedDict`s, so a transformer annotates the dict it builds (`meta: EmailMetadata = {...}`)
and mypy checks the keys, while `MemoryRecord.build(metadata=...)` still takes any mapping and
the wire form stays plain JSON. `METADATA_KEYS` lists the required keys per record type.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "METADATA_KEYS",
    "Attachment",
    "Attendee",
    "CommitMetadata",
    "EmailMetadata",
    "EventMetadata",
    "EventTime",
    "FileChange",
    "IssueMetadata",
    "Media",
    "Person",
    "PullRequestMetadata",
    "TweetMetadata",
]


class Person(TypedDict):
    name: str | None
    email: str | None


class Attachment(TypedDict):
    filename: str
    mimeType: str
    size: int
    attachmentId: str | None


#: `email`: headers, thread and labels; attachments described, never their bytes. (`from` is a
#: keyword, hence the functional form.)
EmailMetadata = TypedDict(
    "EmailMetadata",
    {
        "from": Person,
        "to": list[Person],
        "cc": list[Person],
        "threadId": str,
        "messageId": str | None,
        "labels": list[str],
        "attachments": list[Attachment],
    },
    total=False,
)


class EventTime(TypedDict, total=False):
    """As the Calendar API gives it: {dateTime, timeZone} or {date}."""

    dateTime: str
    timeZone: str
    date: str


class Attendee(TypedDict, total=False):
    email: str | None
    name: str | None
    responseStatus: str | None


class EventMetadata(TypedDict, total=False):
    """`event`."""

    calendarId: str
    start: EventTime
    end: EventTime
    allDay: bool
    location: str | None
    attendees: list[Attendee]
    organizer: dict[str, Any] | None
    recurrence: list[str] | None
    recurringEventId: str | None
    status: str


class FileChange(TypedDict):
    filename: str
    status: str
    additions: int
    deletions: int


class CommitMetadata(TypedDict, total=False):
    """`commit`: the patch text itself is in `content`, bounded."""

    repo: str
    sha: str
    author: dict[str, Any] | str | None
    additions: int
    deletions: int
    files: list[FileChange]


class IssueMetadata(TypedDict, total=False):
    """`issue`."""

    repo: str
    number: int
    state: str
    author: str | None
    labels: list[str]
    assignees: list[str]
    closedAt: str | None


class PullRequestMetadata(IssueMetadata, total=False):
    """`pull_request`: an issue's keys plus the merge facts."""

    merged: bool
    draft: bool
    baseRef: str
    headRef: str


class Media(TypedDict, total=False):
    mediaKey: str
    type: str
    url: str | None


class TweetMetadata(TypedDict, total=False):
    """`tweet`."""

    kind: Literal["tweet", "mention", "like"]
    authorId: str | None
    authorUsername: str | None
    conversationId: str | None
    referencedTweets: list[dict[str, Any]]
    publicMetrics: dict[str, int]
    media: list[Media]


_ISSUE_KEYS = ("repo", "number", "state", "author", "labels", "assignees", "closedAt")

#: The keys design §6 requires in each record type's metadata.
METADATA_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("from", "to", "cc", "threadId", "messageId", "labels", "attachments"),
    "event": (
        "calendarId",
        "start",
        "end",
        "allDay",
        "location",
        "attendees",
        "organizer",
        "recurrence",
        "recurringEventId",
        "status",
    ),
    "commit": ("repo", "sha", "author", "additions", "deletions", "files"),
    "issue": _ISSUE_KEYS,
    "pull_request": (*_ISSUE_KEYS, "merged", "draft", "baseRef", "headRef"),
    "tweet": (
        "kind",
        "authorId",
        "authorUsername",
        "conversationId",
        "referencedTweets",
        "publicMetrics",
        "media",
    ),
}
