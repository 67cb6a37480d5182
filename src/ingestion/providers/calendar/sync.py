"""The Calendar cursor: what one (user, calendar provider) remembers between syncs.

Stored as the `metadata` JSON of `ingestion_sync_state`::

    {
      "version": 1,
      "listSyncToken": null,                # no longer used: the list is read whole each sync
      "includeHidden": false,               # the setting the list token was taken with
      "calendars": {                        # the calendars being mirrored, by id
        "work@example.com": {
          "name": "Work", "timeZone": "Europe/Berlin",
          "syncToken": "…",                 # events nextSyncToken; null = full sync pending
          "pageToken": "…",                 # page of a full (or incremental) listing in progress
          "window": ["2025-…Z", "2027-…Z"], # timeMin/timeMax of the full sync in progress
          "showDeleted": false              # the full sync in progress follows a 410
        }
      },
      "removing": {"old@example.com": "…"}  # calendars left the list: deleting their records,
                                            # value = page token of that listing ("" = start)
    }

Its size grows with the number of calendars, never with the number of events: no event id is
kept. A calendar that leaves the list is drained by listing its events one last time (it is
usually still readable: unsubscribed, hidden, access lowered) and deleting every id listed; see
`provider.py` for the case where it is not readable any more.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["READABLE_ROLES", "CalendarCursor", "CalendarEntry", "is_mirrored"]

#: Access roles that see event details (`freeBusyReader` sees busy blocks only).
READABLE_ROLES = frozenset({"owner", "writer", "reader"})
VERSION = 1


def is_mirrored(entry: Mapping[str, Any], *, include_hidden: bool) -> bool:
    """Whether a calendarList entry is one to mirror: not deleted, readable, not hidden
    (unless hidden calendars are included)."""
    if entry.get("deleted"):
        return False
    if entry.get("accessRole") not in READABLE_ROLES:
        return False
    return include_hidden or not entry.get("hidden")


@dataclass
class CalendarEntry:
    name: str | None = None
    time_zone: str | None = None
    sync_token: str | None = None
    page_token: str | None = None
    window: tuple[str, str] | None = None
    show_deleted: bool = False

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> CalendarEntry:
        window = value.get("window")
        return cls(
            name=value.get("name"),
            time_zone=value.get("timeZone"),
            sync_token=value.get("syncToken"),
            page_token=value.get("pageToken"),
            window=(str(window[0]), str(window[1])) if window and len(window) == 2 else None,
            show_deleted=bool(value.get("showDeleted")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timeZone": self.time_zone,
            "syncToken": self.sync_token,
            "pageToken": self.page_token,
            "window": list(self.window) if self.window else None,
            "showDeleted": self.show_deleted,
        }

    def restart_full(self, *, show_deleted: bool) -> None:
        """Forget the token and any listing in progress: the next listing is a full sync."""
        self.sync_token = None
        self.page_token = None
        self.window = None
        self.show_deleted = show_deleted


@dataclass
class CalendarCursor:
    list_sync_token: str | None = None
    include_hidden: bool = False
    calendars: dict[str, CalendarEntry] = field(default_factory=dict)
    removing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> CalendarCursor:
        """The cursor in a stored state; an empty or foreign state is a first sync."""
        if state.get("version") != VERSION:
            return cls()
        return cls(
            list_sync_token=state.get("listSyncToken"),
            include_hidden=bool(state.get("includeHidden")),
            calendars={
                str(cid): CalendarEntry.of(value)
                for cid, value in (state.get("calendars") or {}).items()
                if isinstance(value, Mapping)
            },
            removing={
                str(cid): str(tok or "") for cid, tok in (state.get("removing") or {}).items()
            },
        )

    def to_json(self) -> dict[str, Any]:
        """A complete, independent copy to hand to the engine with a page."""
        return copy.deepcopy(
            {
                "version": VERSION,
                "listSyncToken": self.list_sync_token,
                "includeHidden": self.include_hidden,
                "calendars": {cid: e.to_json() for cid, e in sorted(self.calendars.items())},
                "removing": dict(sorted(self.removing.items())),
            }
        )

    def add(self, calendar_id: str, entry: Mapping[str, Any]) -> bool:
        """Start mirroring a calendar (full sync pending); refreshes its name. True if new."""
        known = self.calendars.get(calendar_id)
        self.removing.pop(calendar_id, None)
        if known is not None:
            known.name = entry.get("summaryOverride") or entry.get("summary") or known.name
            known.time_zone = entry.get("timeZone") or known.time_zone
            return False
        self.calendars[calendar_id] = CalendarEntry(
            name=entry.get("summaryOverride") or entry.get("summary"),
            time_zone=entry.get("timeZone"),
        )
        return True

    def remove(self, calendar_id: str) -> bool:
        """Stop mirroring a calendar and queue the deletion of its records. True if known."""
        if self.calendars.pop(calendar_id, None) is None:
            return False
        self.removing[calendar_id] = ""
        return True
