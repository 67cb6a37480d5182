"""A faithful local emulator of the Google Calendar API v3 (the parts the provider calls).

Built from the API reference and Google's discovery document (`calendar.v3`). What it does
like www.googleapis.com/calendar/v3:

- `GET /users/me/calendarList`: `maxResults` (default 100, max 250), `pageToken`, `syncToken`,
  `showHidden`, `showDeleted`, `minAccessRole`. With a sync token only entries changed since
  come back, deleted (`deleted: true`) and hidden ones always included; `minAccessRole` with a
  sync token is a 400. A change of the user's access role (the ACL) or of the calendar's own
  properties (its summary) does NOT make an entry come back to a sync token: calendarList.list
  reference, `syncToken`: "If only read-only fields such as calendar properties or ACLs have
  changed, the entry won't be returned" (`set_role`, `rename_calendar`); a full listing
  shows them.
- `GET /calendars/{id}/events`: `maxResults` (default 250, max 2500), `pageToken`, `syncToken`,
  `showDeleted`, `singleEvents=false`, `timeMin`, `timeMax`, `updatedMin`. A sync token with
  `timeMin`/`timeMax`/`updatedMin`/`q`/`orderBy`/`iCalUID` is a 400; with a sync token cancelled
  events are always included; without one they are included with `showDeleted`, and cancelled
  occurrences of a series are included when `showDeleted` and `singleEvents` are both false.
  Recurring series stay a master with its `recurrence` plus exception events
  (`{masterId}_{YYYYMMDDTHHMMSSZ}`, `recurringEventId`, `originalStartTime`). Deleting a series
  reports the master as cancelled. The Events reference (`status`) speaks of cancelled
  exceptions "of an uncancelled recurring event" only, so a client cannot count on each
  exception of a deleted series being reported: by default (`delete_event(report_exceptions=
  False)`) the master is reported alone and its exceptions are cancelled in place.
- `nextPageToken` and `nextSyncToken` are exclusive; the sync token comes on the last page
  only. Listings are snapshots: a change during paging is reported by the next sync token.
- An expired (or foreign) sync token → 410 `fullSyncRequired` with Google's exact body.
- `GET /calendars/{id}/events/{eventId}`; unknown → 404 `notFound`.
- Bearer check against `state.tokens` (token → user) → 401 in Google's error shape; a token
  whose `state.scopes` lacks a Calendar scope → 403 `insufficientPermissions`.
- A calendar the user cannot see (deleted, not shared) → 404 `notFound`; a `freeBusyReader`
  sees only the busy blocks.
- Fault injection (`inject`) and a per-user requests-per-minute quota (`quota_per_minute`)
  answering 403 `rateLimitExceeded`; every request is logged in `state.requests`.

- Push (Calendar "Push notifications" guide; Events.watch and Channels.stop reference):
  `POST /calendars/{id}/events/watch` `{id, type: "web_hook", address, token?, params?.ttl}`
  answers the channel `{kind: "api#channel", id, resourceId, resourceUri, token, expiration}`
  (expiration epoch ms as a string; the ttl asked for, at most `CHANNEL_MAX_TTL`). An id
  already in use, a type other than `web_hook` or an id outside `[A-Za-z0-9-_+/=]{1,64}` is a
  400. A `sync` notification (message number 1) follows at once; then every change to an event
  of the calendar sends `exists` to each live channel on it, with the headers
  `X-Goog-Channel-ID`, `-Token` (when set), `-Expiration`, `X-Goog-Resource-ID`, `-URI`,
  `-State`, `X-Goog-Message-Number` and an empty body; notifications are retried with backoff
  when not acknowledged. `POST /channels/stop` `{id, resourceId}` answers 204, or 404
  `notFound` for a channel it does not know. Deviation: Google requires an https address with
  a valid certificate; here a loopback http address is accepted too.

Not emulated: `singleEvents=true` (expansion of series) answers 400, `q`, `orderBy`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators.gmail import UNAUTHENTICATED

__all__ = [
    "CALENDAR_SCOPE",
    "CalendarState",
    "Fault",
    "LoggedRequest",
    "create_app",
    "html_link",
    "instance_id",
]

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.readonly"
_CALENDAR_SCOPES = (
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.events.readonly",
)
_ROLES = ("freeBusyReader", "reader", "writer", "owner")
#: The longest channel granted here (the guide: the ttl asked for, or a default; Google may
#: grant less, which the answer's `expiration` says).
CHANNEL_MAX_TTL = 7 * 24 * 3600
_CHANNEL_ID = re.compile(r"[A-Za-z0-9\-_+/=]{1,64}")
_SYNC_FORBIDDEN = ("timeMin", "timeMax", "updatedMin", "q", "orderBy", "iCalUID")

#: Google's answer to a missing or refused token (the same for every Google API).
AUTH_ERROR = UNAUTHENTICATED
GONE_ERROR = {
    "error": {
        "errors": [
            {
                "domain": "global",
                "reason": "fullSyncRequired",
                "message": "Sync token is no longer valid, a full sync is required.",
            }
        ],
        "code": 410,
        "message": "Sync token is no longer valid, a full sync is required.",
    }
}
_THROTTLE_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
}


def _error(code: int, reason: str, message: str, domain: str = "global") -> dict[str, Any]:
    return {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": code,
            "message": message,
        }
    }


def _scope_error(method: str) -> dict[str, Any]:
    return {
        "error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [
                {
                    "message": "Insufficient Permission",
                    "domain": "global",
                    "reason": "insufficientPermissions",
                }
            ],
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "domain": "googleapis.com",
                    "metadata": {"service": "calendar-json.googleapis.com", "method": method},
                }
            ],
        }
    }


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


def html_link(event_id: str, calendar_id: str) -> str:
    """Google's `htmlLink`: `eid` = base64url("{eventId} {calendarId}") without padding."""
    eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode().rstrip("=")
    return f"https://www.google.com/calendar/event?eid={eid}"


def instance_id(master_id: str, original_start: Mapping[str, Any]) -> str:
    """Google's id of one occurrence of a series: `{masterId}_{YYYYMMDD[THHMMSSZ]}`."""
    if "date" in original_start:
        return f"{master_id}_{original_start['date'].replace('-', '')}"
    moment = _instant(original_start)
    return f"{master_id}_{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def _instant(when: Mapping[str, Any]) -> datetime:
    if "date" in when:
        return datetime.combine(date.fromisoformat(when["date"]), datetime.min.time(), UTC)
    parsed = datetime.fromisoformat(str(when["dateTime"]).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(when.get("timeZone") or "UTC"))
    return parsed


def _encode(value: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _decode(token: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _new_id() -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuv"  # base32hex, like Google's event ids
    return "".join(secrets.choice(alphabet) for _ in range(26))


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` (and a Google error body)."""

    status: int
    reason: str = "backendError"
    times: int = 1
    path_contains: str | None = None
    retry_after: str | None = None


@dataclass
class LoggedRequest:
    method: str
    path: str
    params: dict[str, str]
    user: str | None
    status: int


@dataclass
class _Event:
    body: dict[str, Any]
    seq: int

    @property
    def cancelled(self) -> bool:
        return self.body.get("status") == "cancelled"


@dataclass
class _Calendar:
    id: str
    summary: str
    time_zone: str
    events: dict[str, _Event] = field(default_factory=dict)
    deleted: bool = False
    epoch: int = 0


@dataclass
class _Entry:
    calendar_id: str
    access_role: str
    seq: int
    primary: bool = False
    hidden: bool = False
    deleted: bool = False
    summary_override: str | None = None


@dataclass
class CalendarState:
    """Everything the emulated API knows; mutate it through the helpers (thread-safe)."""

    #: access token → user key
    tokens: dict[str, str] = field(default_factory=dict)
    #: access token → granted scopes (space separated); a token not listed has Calendar scope
    scopes: dict[str, str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[LoggedRequest] = field(default_factory=list)
    #: Requests per user per rolling minute before 403 `rateLimitExceeded` (None = no limit).
    quota_per_minute: int | None = None
    calendars: dict[str, _Calendar] = field(default_factory=dict)
    lists: dict[str, dict[str, _Entry]] = field(default_factory=dict)
    #: who may read which calendar: calendar id → user → role
    acl: dict[str, dict[str, str]] = field(default_factory=dict)
    list_epoch: int = 0
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _last_seq: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _recent: dict[str, list[float]] = field(default_factory=dict)
    #: Watch channels by id: {calendarId, user, address, token, resourceId, expiration, number}.
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Sends notifications (`tests.emulators.push.PushSender`); None = channels stay silent.
    sender: Any = None
    base_url: str = "https://www.googleapis.com/calendar/v3"

    # --- scripting ---------------------------------------------------------------------
    def next_seq(self) -> int:
        self._last_seq = next(self._seq)
        return self._last_seq

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def count(self, path_contains: str = "", *, status: int | None = None) -> int:
        """Requests logged whose path contains `path_contains` (and with `status`)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if path_contains in r.path and (status is None or r.status == status)
            )

    def add_calendar(
        self,
        user: str,
        calendar_id: str,
        summary: str,
        *,
        time_zone: str = "UTC",
        access_role: str = "owner",
        primary: bool = False,
        hidden: bool = False,
    ) -> None:
        """Create (or share) a calendar and put it in the user's calendar list."""
        with self._lock:
            if calendar_id not in self.calendars or self.calendars[calendar_id].deleted:
                self.calendars[calendar_id] = _Calendar(calendar_id, summary, time_zone)
            self.acl.setdefault(calendar_id, {})[user] = access_role
            self.lists.setdefault(user, {})[calendar_id] = _Entry(
                calendar_id, access_role, self.next_seq(), primary=primary, hidden=hidden
            )

    def _touch_entry(self, user: str, calendar_id: str, **changes: Any) -> None:
        entry = self.lists[user][calendar_id]
        for key, value in changes.items():
            setattr(entry, key, value)
        entry.seq = self.next_seq()

    def unsubscribe(self, user: str, calendar_id: str) -> None:
        """Remove from the user's list; the calendar stays readable (the ACL is kept)."""
        with self._lock:
            self._touch_entry(user, calendar_id, deleted=True)

    def set_hidden(self, user: str, calendar_id: str, hidden: bool = True) -> None:
        with self._lock:
            self._touch_entry(user, calendar_id, hidden=hidden)

    def set_role(self, user: str, calendar_id: str, role: str) -> None:
        """Change the user's access (an ACL change): a list sync token does not report it."""
        with self._lock:
            self.acl.setdefault(calendar_id, {})[user] = role
            self.lists[user][calendar_id].access_role = role

    def rename_calendar(self, calendar_id: str, summary: str) -> None:
        """The owner renames the calendar (a calendar property): not reported to list tokens."""
        with self._lock:
            self.calendars[calendar_id].summary = summary

    def revoke(self, user: str, calendar_id: str) -> None:
        """The owner stops sharing: gone from the list and unreadable (404)."""
        with self._lock:
            self.acl.get(calendar_id, {}).pop(user, None)
            self._touch_entry(user, calendar_id, deleted=True)

    def delete_calendar(self, calendar_id: str) -> None:
        """Delete a calendar: unreadable (404) and deleted from every list."""
        with self._lock:
            self.calendars[calendar_id].deleted = True
            for user, entries in self.lists.items():
                if calendar_id in entries and not entries[calendar_id].deleted:
                    self._touch_entry(user, calendar_id, deleted=True)

    def expire_sync_tokens(self, calendar_id: str | None = None) -> None:
        """Invalidate the sync tokens of one calendar's events (or of the calendar lists)."""
        with self._lock:
            if calendar_id is None:
                self.list_epoch += 1
            else:
                self.calendars[calendar_id].epoch += 1

    def insert_event(self, calendar_id: str, **fields: Any) -> dict[str, Any]:
        """Add an event (API field names); fills id, etag, iCalUID, htmlLink, timestamps."""
        with self._lock:
            calendar = self.calendars[calendar_id]
            now = rfc3339(datetime.now(UTC))
            event_id = fields.pop("id", None) or _new_id()
            body: dict[str, Any] = {
                "kind": "calendar#event",
                "id": event_id,
                "status": "confirmed",
                "htmlLink": html_link(event_id, calendar_id),
                "created": now,
                "updated": now,
                "creator": {"email": calendar_id},
                "organizer": {"email": calendar_id, "displayName": calendar.summary},
                "iCalUID": f"{fields.get('recurringEventId') or event_id}@google.com",
                "sequence": 0,
                "reminders": {"useDefault": True},
                "eventType": "default",
            }
            body.update(fields)
            self._store(calendar, body)
            return dict(body)

    def _store(self, calendar: _Calendar, body: dict[str, Any]) -> None:
        seq = self.next_seq()
        body["etag"] = f'"{3_000_000_000_000_000 + seq}"'
        calendar.events[body["id"]] = _Event(body, seq)
        self._notify(calendar.id, "exists")

    def _notify(self, calendar_id: str, resource_state: str) -> None:
        if self.sender is None:
            return
        now_ms = time.time() * 1000
        for channel_id, channel in self.channels.items():
            if channel["calendarId"] != calendar_id or channel["expiration"] < now_ms:
                continue
            channel["number"] += 1
            expires = datetime.fromtimestamp(channel["expiration"] / 1000, UTC)
            headers = {
                "X-Goog-Channel-ID": channel_id,
                "X-Goog-Channel-Expiration": expires.strftime("%a, %d %b %Y %H:%M:%S GMT"),
                "X-Goog-Resource-ID": channel["resourceId"],
                "X-Goog-Resource-URI": channel["resourceUri"],
                "X-Goog-Resource-State": resource_state,
                "X-Goog-Message-Number": str(channel["number"]),
                "Content-Length": "0",
            }
            if channel["token"] is not None:
                headers["X-Goog-Channel-Token"] = channel["token"]
            self.sender.post(channel["address"], headers, b"")

    def expire_channels(self) -> None:
        """Every channel reaches its expiration: no more notifications."""
        with self._lock:
            for channel in self.channels.values():
                channel["expiration"] = 0

    def _watch(self, user: str, calendar_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        if self._role(user, calendar_id) not in ("reader", "writer", "owner"):
            return 404, _error(404, "notFound", "Not Found")
        if not isinstance(body, dict):
            return 400, _error(400, "parseError", "Parse Error")
        channel_id = body.get("id")
        if not isinstance(channel_id, str) or not _CHANNEL_ID.fullmatch(channel_id):
            return 400, _error(400, "invalid", "Invalid channel id.")
        if body.get("type") not in ("web_hook", "webhook"):
            return 400, _error(400, "invalid", "Invalid value for type.")
        if channel_id in self.channels:
            return 400, _error(400, "channelIdNotUnique", f"Channel id {channel_id} not unique")
        address = body.get("address")
        if not isinstance(address, str) or not address.startswith(("https://", "http://127.")):
            return 400, _error(400, "push.webhookUrlNotHttps", "WebHook callback must be HTTPS")
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        ttl = str(params.get("ttl", CHANNEL_MAX_TTL))
        seconds = min(int(ttl), CHANNEL_MAX_TTL) if ttl.isdigit() else CHANNEL_MAX_TTL
        expiration = int(time.time() * 1000) + seconds * 1000
        resource_id = "r" + secrets.token_hex(12)
        token = body.get("token")
        channel = {
            "calendarId": calendar_id,
            "user": user,
            "address": address,
            "token": token if isinstance(token, str) else None,
            "resourceId": resource_id,
            "resourceUri": f"{self.base_url}/calendars/{calendar_id}/events?alt=json",
            "expiration": expiration,
            "number": 0,
        }
        self.channels[channel_id] = channel
        answer = {
            "kind": "api#channel",
            "id": channel_id,
            "resourceId": resource_id,
            "resourceUri": channel["resourceUri"],
            "expiration": str(expiration),
        }
        if channel["token"] is not None:
            answer["token"] = channel["token"]
        # The guide: "a sync message is sent ... when a new notification channel is created".
        self._notify_one(channel_id, "sync")
        return 200, answer

    def _notify_one(self, channel_id: str, resource_state: str) -> None:
        saved = self.channels
        self.channels = {channel_id: saved[channel_id]}
        try:
            self._notify(saved[channel_id]["calendarId"], resource_state)
        finally:
            self.channels = saved

    def _stop(self, body: Any) -> tuple[int, dict[str, Any] | None]:
        channel_id = body.get("id") if isinstance(body, dict) else None
        channel = self.channels.get(channel_id) if isinstance(channel_id, str) else None
        if channel is None or channel["resourceId"] != body.get("resourceId"):
            message = f"Channel '{channel_id}' not found for project '12345'"
            return 404, _error(404, "notFound", message)
        del self.channels[channel_id]
        return 204, None

    def update_event(self, calendar_id: str, event_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            calendar = self.calendars[calendar_id]
            body = dict(calendar.events[event_id].body)
            body.update(changes)
            body["updated"] = rfc3339(datetime.now(UTC))
            body["sequence"] = int(body.get("sequence", 0)) + 1
            self._store(calendar, body)
            return dict(body)

    def delete_event(
        self, calendar_id: str, event_id: str, *, report_exceptions: bool = False
    ) -> None:
        """Delete an event. Deleting a series cancels its exceptions too; they are reported
        to sync tokens as cancelled only with `report_exceptions` (see the module docstring)."""
        with self._lock:
            calendar = self.calendars[calendar_id]
            now = rfc3339(datetime.now(UTC))
            for event in list(calendar.events.values()):
                if event.body.get("recurringEventId") != event_id:
                    continue
                body = {**event.body, "status": "cancelled", "updated": now}
                if report_exceptions:
                    self._store(calendar, body)
                else:  # cancelled in place: a later full listing sees it, a sync token not
                    event.body = body
            body = dict(calendar.events[event_id].body)
            body["status"] = "cancelled"
            body["updated"] = now
            self._store(calendar, body)

    def purge_event(self, calendar_id: str, event_id: str) -> None:
        """Forget an event entirely, as Google does some time after a deletion: it is no
        longer listed, not even with `showDeleted` or to an old sync token."""
        with self._lock:
            del self.calendars[calendar_id].events[event_id]

    def move_instance(
        self,
        calendar_id: str,
        master_id: str,
        original_start: Mapping[str, Any],
        *,
        start: Mapping[str, Any],
        end: Mapping[str, Any],
        **changes: Any,
    ) -> dict[str, Any]:
        """Change one occurrence of a series: an exception event of its own."""
        with self._lock:
            master = self.calendars[calendar_id].events[master_id].body
            inherited = {
                k: v
                for k, v in master.items()
                if k not in ("id", "recurrence", "etag", "htmlLink", "created", "updated")
            }
            return self.insert_event(
                calendar_id,
                **{
                    **inherited,
                    "id": instance_id(master_id, original_start),
                    "recurringEventId": master_id,
                    "originalStartTime": dict(original_start),
                    "start": dict(start),
                    "end": dict(end),
                    **changes,
                },
            )

    def cancel_instance(
        self, calendar_id: str, master_id: str, original_start: Mapping[str, Any]
    ) -> str:
        """Cancel one occurrence of a series; returns the occurrence's id."""
        with self._lock:
            calendar = self.calendars[calendar_id]
            event_id = instance_id(master_id, original_start)
            body = {
                "kind": "calendar#event",
                "id": event_id,
                "status": "cancelled",
                "recurringEventId": master_id,
                "originalStartTime": dict(original_start),
            }
            self._store(calendar, body)
            return event_id

    def bulk_insert(self, calendar_id: str, bodies: Iterable[dict[str, Any]]) -> int:
        """Fast insert of complete event bodies (benchmarks); returns how many."""
        with self._lock:
            calendar = self.calendars[calendar_id]
            count = 0
            for body in bodies:
                body.setdefault("htmlLink", html_link(body["id"], calendar_id))
                self._store(calendar, body)
                count += 1
            return count

    # --- request handling --------------------------------------------------------------
    def _fault_for(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path_contains is None or fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _over_quota(self, user: str) -> bool:
        if self.quota_per_minute is None:
            return False
        now = time.monotonic()
        recent = [t for t in self._recent.get(user, []) if now - t < 60]
        recent.append(now)
        self._recent[user] = recent
        return len(recent) > self.quota_per_minute

    def _role(self, user: str, calendar_id: str) -> str | None:
        calendar = self.calendars.get(calendar_id)
        if calendar is None or calendar.deleted:
            return None
        return self.acl.get(calendar_id, {}).get(user)

    def _list_body(self, user: str, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        entries = self.lists.get(user, {})
        sync = params.get("syncToken")
        if sync and "minAccessRole" in params:
            return 400, _error(400, "invalid", "Invalid Value")
        page = _decode(params["pageToken"]) if params.get("pageToken") else None
        if params.get("pageToken") and page is None:
            return 400, _error(400, "invalid", "Invalid Value")
        since = 0
        if sync:
            token = _decode(sync)
            if not token or token.get("u") != user or token.get("e") != self.list_epoch:
                return 410, GONE_ERROR
            since = int(token["s"])
        snapshot = int(page["snap"]) if page else self._last_seq
        after = tuple(page["after"]) if page else (0, "")
        show_hidden = params.get("showHidden") == "true" or bool(sync)
        show_deleted = params.get("showDeleted") == "true" or bool(sync)
        min_role = params.get("minAccessRole")
        selected = sorted(
            (e for e in entries.values() if since < e.seq <= snapshot),
            key=lambda e: (e.seq, e.calendar_id),
        )
        items = [
            e
            for e in selected
            if (show_deleted or not e.deleted)
            and (show_hidden or not e.hidden)
            and (not min_role or _ROLES.index(e.access_role) >= _ROLES.index(min_role))
            and (e.seq, e.calendar_id) > after
        ]
        size = max(1, min(int(params.get("maxResults", 100)), 250))
        chunk, rest = items[:size], items[size:]
        body: dict[str, Any] = {
            "kind": "calendar#calendarList",
            "etag": f'"p{snapshot}"',
            "items": [self._entry_json(e) for e in chunk],
        }
        if rest:
            body["nextPageToken"] = _encode(
                {"snap": snapshot, "after": [chunk[-1].seq, chunk[-1].calendar_id]}
            )
        else:
            body["nextSyncToken"] = _encode({"u": user, "s": snapshot, "e": self.list_epoch})
        return 200, body

    def _entry_json(self, entry: _Entry) -> dict[str, Any]:
        etag = f'"{1_600_000_000_000_000 + entry.seq}"'
        if entry.deleted:
            return {
                "kind": "calendar#calendarListEntry",
                "etag": etag,
                "id": entry.calendar_id,
                "deleted": True,
            }
        calendar = self.calendars[entry.calendar_id]
        body: dict[str, Any] = {
            "kind": "calendar#calendarListEntry",
            "etag": etag,
            "id": entry.calendar_id,
            "summary": calendar.summary,
            "timeZone": calendar.time_zone,
            "colorId": "14",
            "backgroundColor": "#9fe1e7",
            "foregroundColor": "#000000",
            "selected": True,
            "accessRole": entry.access_role,
            "defaultReminders": [],
        }
        if entry.summary_override:
            body["summaryOverride"] = entry.summary_override
        if entry.primary:
            body["primary"] = True
        if entry.hidden:
            body["hidden"] = True
        return body

    def _events_body(
        self, user: str, calendar_id: str, params: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        role = self._role(user, calendar_id)
        if role is None:
            return 404, _error(404, "notFound", "Not Found")
        calendar = self.calendars[calendar_id]
        sync = params.get("syncToken")
        if sync and any(name in params for name in _SYNC_FORBIDDEN):
            return 400, _error(400, "invalid", "Invalid Value")
        if params.get("singleEvents") == "true":
            return 400, _error(400, "invalid", "singleEvents=true is not emulated")
        page = _decode(params["pageToken"]) if params.get("pageToken") else None
        if params.get("pageToken") and (page is None or page.get("c") != calendar_id):
            return 400, _error(400, "invalid", "Invalid Value")
        since = 0
        if sync:
            token = _decode(sync)
            if not token or token.get("c") != calendar_id or token.get("e") != calendar.epoch:
                return 410, GONE_ERROR
            since = int(token["s"])
        snapshot = int(page["snap"]) if page else self._last_seq
        after = tuple(page["after"]) if page else (0, "")
        show_deleted = params.get("showDeleted") == "true" or bool(sync)
        time_min = _parse_bound(params.get("timeMin"))
        time_max = _parse_bound(params.get("timeMax"))
        updated_min = _parse_bound(params.get("updatedMin"))
        candidates = sorted(
            (e for e in calendar.events.values() if since < e.seq <= snapshot),
            key=lambda e: (e.seq, e.body["id"]),
        )
        items: list[_Event] = []
        for event in candidates:
            if (event.seq, event.body["id"]) <= after:
                continue
            if event.cancelled and not show_deleted and not event.body.get("recurringEventId"):
                continue
            if not sync and not _in_window(event.body, time_min, time_max):
                continue
            updated = event.body.get("updated")
            if updated_min and updated and _instant({"dateTime": updated}) < updated_min:
                continue
            items.append(event)
        size = max(1, min(int(params.get("maxResults", 250)), 2500))
        chunk, rest = items[:size], items[size:]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"p{snapshot}"',
            "summary": calendar.summary,
            "updated": rfc3339(datetime.now(UTC)),
            "timeZone": calendar.time_zone,
            "accessRole": role,
            "defaultReminders": [],
            "items": [_event_json(e, role) for e in chunk],
        }
        if rest:
            body["nextPageToken"] = _encode(
                {"c": calendar_id, "snap": snapshot, "after": [chunk[-1].seq, chunk[-1].body["id"]]}
            )
        else:
            body["nextSyncToken"] = _encode({"c": calendar_id, "s": snapshot, "e": calendar.epoch})
        return 200, body

    def _event_get(self, user: str, calendar_id: str, event_id: str) -> tuple[int, dict[str, Any]]:
        role = self._role(user, calendar_id)
        event = self.calendars[calendar_id].events.get(event_id) if role else None
        if role is None or event is None:
            return 404, _error(404, "notFound", "Not Found")
        return 200, _event_json(event, role)


def _parse_bound(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _event_json(event: _Event, role: str) -> dict[str, Any]:
    body = event.body
    if event.cancelled:
        keep = ("kind", "etag", "id", "status", "recurringEventId", "originalStartTime")
        return {k: body[k] for k in keep if k in body}
    if role == "freeBusyReader":
        keep = ("kind", "etag", "id", "status", "start", "end", "recurringEventId")
        return {k: body[k] for k in keep if k in body}
    return dict(body)


def _in_window(
    body: Mapping[str, Any], time_min: datetime | None, time_max: datetime | None
) -> bool:
    """Whether an event (or, for a master, any occurrence of its series) overlaps the window."""
    start_field = body.get("start") or body.get("originalStartTime")
    if not start_field:
        return True
    start = _instant(start_field)
    end = _instant(body["end"]) if body.get("end") else start + timedelta(hours=1)
    if time_max is not None and start >= time_max:
        return False
    if time_min is None:
        return True
    if body.get("recurrence") and body.get("status") != "cancelled":
        last = _series_end(body, start)
        return last is None or last + (end - start) > time_min
    return end > time_min


def _series_end(body: Mapping[str, Any], start: datetime) -> datetime | None:
    """The start of the last occurrence of a series; `None` when it never ends."""
    rules = [line for line in body.get("recurrence", []) if line.startswith("RRULE:")]
    if not rules or any("COUNT=" not in r and "UNTIL=" not in r for r in rules):
        return None
    text = "\n".join(rules)
    try:
        occurrences = list(rrulestr(text, dtstart=start, forceset=True))
    except ValueError:
        # A date-only UNTIL (all-day series) with an aware start: count in naive UTC instead.
        naive = start.astimezone(UTC).replace(tzinfo=None)
        occurrences = [o.replace(tzinfo=UTC) for o in rrulestr(text, dtstart=naive, forceset=True)]
    return occurrences[-1] if occurrences else start


def create_app(state: CalendarState) -> Starlette:
    """The emulated API at the root (set `CALENDAR_API_URL` to the server's URL)."""

    def answer(request: Request, user: str | None, status: int, body: Any) -> JSONResponse:
        state.requests.append(
            LoggedRequest(
                request.method, request.url.path, dict(request.query_params), user, status
            )
        )
        return JSONResponse(body, status_code=status)

    def guard(request: Request, method: str) -> tuple[str | None, JSONResponse | None]:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        user = state.tokens.get(token)
        if user is None:
            return None, answer(request, None, 401, AUTH_ERROR)
        granted = state.scopes.get(token)
        if granted is not None and not set(granted.split()) & set(_CALENDAR_SCOPES):
            return user, answer(request, user, 403, _scope_error(method))
        fault = state._fault_for(request.url.path)
        if fault is not None:
            message = _THROTTLE_MESSAGES.get(fault.reason, "Backend Error")
            domain = "usageLimits" if fault.reason in _THROTTLE_MESSAGES else "global"
            response = answer(
                request, user, fault.status, _error(fault.status, fault.reason, message, domain)
            )
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return user, response
        if state._over_quota(user):
            body = _error(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")
            return user, answer(request, user, 403, body)
        return user, None

    async def calendar_list(request: Request) -> JSONResponse:
        with state._lock:
            user, refused = guard(request, "calendar.v3.CalendarList.List")
            if refused is not None or user is None:
                assert refused is not None
                return refused
            status, body = state._list_body(user, request.query_params)
            return answer(request, user, status, body)

    async def events(request: Request) -> JSONResponse:
        with state._lock:
            user, refused = guard(request, "calendar.v3.Events.List")
            if refused is not None or user is None:
                assert refused is not None
                return refused
            calendar_id = request.path_params["calendar_id"]
            status, body = state._events_body(user, calendar_id, request.query_params)
            return answer(request, user, status, body)

    async def event(request: Request) -> JSONResponse:
        with state._lock:
            user, refused = guard(request, "calendar.v3.Events.Get")
            if refused is not None or user is None:
                assert refused is not None
                return refused
            status, body = state._event_get(
                user, request.path_params["calendar_id"], request.path_params["event_id"]
            )
            return answer(request, user, status, body)

    async def watch(request: Request) -> Response:
        raw = await request.body()
        with state._lock:
            user, refused = guard(request, "calendar.v3.Events.Watch")
            if refused is not None or user is None:
                assert refused is not None
                return refused
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            status, answer_body = state._watch(user, request.path_params["calendar_id"], body)
            return answer(request, user, status, answer_body)

    async def stop(request: Request) -> Response:
        raw = await request.body()
        with state._lock:
            user, refused = guard(request, "calendar.v3.Channels.Stop")
            if refused is not None or user is None:
                assert refused is not None
                return refused
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            status, answer_body = state._stop(body)
            state.requests.append(LoggedRequest(request.method, request.url.path, {}, user, status))
            if answer_body is None:
                return Response(status_code=status)
            return JSONResponse(answer_body, status_code=status)

    return Starlette(
        routes=[
            Route("/calendars/{calendar_id:str}/events/watch", watch, methods=["POST"]),
            Route("/channels/stop", stop, methods=["POST"]),
            Route("/users/me/calendarList", calendar_list),
            Route("/calendars/{calendar_id:str}/events", events),
            Route("/calendars/{calendar_id:str}/events/{event_id:str}", event),
        ]
    )
