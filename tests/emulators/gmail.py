"""A faithful local Gmail API v1 (`/gmail/v1/users/{userId}/...` and the batch endpoint).

Built from /work/shared/providers.md and Google's discovery document:

- `profile`, `messages` list (`q` with `after:`/`before:` epoch seconds or YYYY/MM/DD,
  `in:`/`-in:`/`label:`, free words; `labelIds`, `includeSpamTrash`, `maxResults` ≤ 500,
  `pageToken`; newest first; `{"resultSizeEstimate": 0}` alone when nothing matches),
  `messages/{id}` in `minimal`, `full` (default), `raw`, `metadata` (`metadataHeaders`),
  `messages/{id}/attachments/{attachmentId}`, `history` (increasing ids, `historyTypes`,
  `labelId`, paging, `{historyId}` alone when nothing changed, 404 `notFound` below the
  expiry horizon);
- the `full` payload tree is built FROM the stored raw RFC 5322 bytes: part ids "", "0", "0.1"…,
  headers as sent (unfolded), bodies with the transfer encoding removed as base64url `data`;
  a text part's `data` is converted to UTF-8 from the charset it declares while its headers
  (`charset=iso-8859-1` included) are passed verbatim: `format=full` normalises `body.data` to
  UTF-8 (github.com/openclaw/gogcli issue 446 and pull 511, ISO-2022-JP mail read through the
  API; github.com/macro-inc/macro pull 6133, Windows-1252-labelled UTF-8 bodies), while
  `format=raw` keeps the original bytes; bytes the declared charset cannot decode stay as
  they are;
- a text body larger than `GmailState.inline_body_limit` comes as `body.attachmentId` (and its
  `size`) without `data`, to be read with `messages.attachments.get` (5 units) like a file:
  MessagePartBody reference, "When present, contains the ID of an external attachment that can
  be retrieved in a separate messages.attachments.get request". Google does not publish the
  threshold; the default here is an assumption, tests lower it. That call answers the part's
  bytes as stored (its declared charset);
  attachment parts (a filename or `Content-Disposition: attachment`, and message/rfc822) carry
  an `attachmentId` and no data; a multipart without a usable boundary is a leaf whose data is
  its raw text, as a lenient parser sees it;
- `POST /batch/gmail/v1` (and `/batch`): multipart/mixed of `application/http` parts, at most
  100; answers carry `Content-ID: <response-…>` and come back in shuffled order;
- Bearer check against `tokens` (401 `authError`), per-user quota as a token bucket in Gmail
  units (429 `rateLimitExceeded`), scripted faults, and a request log.

Tests change a mailbox through `add_message`, `delete_message`, `trash`, `untrash`, `relabel`;
each writes a history record exactly as the API reports it.

Push (Gmail API "Push notifications" guide and the users.watch / users.stop reference):
`POST users/me/watch` `{topicName, labelIds?, labelFilterBehavior?}` (`include` | `exclude`;
the deprecated `labelFilterAction` is read when the former is absent) answers
`{historyId, expiration}` (strings; expiration epoch ms, 7 days on); a topic not of the form
`projects/P/topics/T` is 400 `invalidArgument`. `POST users/me/stop` answers 204 with no body.
Quota units: watch 100, stop 50. While a watch is live every history change whose message
passes the label filter publishes `{"emailAddress", "historyId"}` (the new history id) to the
topic through `GmailState.publish` (see `tests.emulators.push.PubSub`).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import email.utils
import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["QUOTA_UNITS", "GmailMessage", "GmailState", "Mailbox", "create_app"]

#: Default size above which a text body is stored apart (see the module docstring).
INLINE_BODY_LIMIT = 256 * 1024

QUOTA_UNITS = {
    "messages.get": 5,
    "messages.list": 5,
    "history.list": 2,
    "getProfile": 1,
    "attachments.get": 5,
    "watch": 100,
    "stop": 50,
}
#: How long a watch lasts (Gmail push guide: "call watch at least every 7 days").
WATCH_SECONDS = 7 * 24 * 3600
_TOPIC = re.compile(r"projects/[^/]+/topics/[^/]+")
HISTORY_TYPES = ("messagesAdded", "messagesDeleted", "labelsAdded", "labelsRemoved")
_TYPE_PARAM = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def google_error(
    code: int, message: str, reason: str, status: str, domain: str = "global"
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": status,
        }
    }


NOT_FOUND = google_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")
UNAUTHENTICATED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access "
        "token, login cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "errors": [
            {
                "message": "Invalid Credentials",
                "domain": "global",
                "reason": "authError",
                "location": "Authorization",
                "locationType": "header",
            }
        ],
        "status": "UNAUTHENTICATED",
    }
}
RATE_LIMITED = google_error(
    429,
    "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of "
    "service 'gmail.googleapis.com'.",
    "rateLimitExceeded",
    "RESOURCE_EXHAUSTED",
    domain="usageLimits",
)


@dataclass
class GmailMessage:
    id: str
    thread_id: str
    label_ids: list[str]
    raw: bytes
    internal_date: int
    history_id: int


@dataclass
class Mailbox:
    email_address: str
    messages: dict[str, GmailMessage] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    history_id: int = 1000
    #: `startHistoryId` below this answers 404 (the history was pruned).
    history_floor: int = 0
    #: The live watch: topicName, labelIds, behavior, expiration (epoch ms); None = none.
    watch: dict[str, Any] | None = None
    #: Search results by (query, labelIds, includeSpamTrash), with the `history_id` they were
    #: computed at (every change moves it): a walk of N pages filters and sorts the mailbox
    #: once, not N times. Gmail's own listing costs nothing like a scan of the mailbox per
    #: page; an emulator that did would bill the client's page count with its own CPU.
    listings: dict[tuple[str, tuple[str, ...], bool], tuple[int, list[GmailMessage]]] = field(
        default_factory=dict
    )


@dataclass
class LoggedRequest:
    method: str
    path: str
    endpoint: str
    status: int
    user: str | None
    batch: bool = False
    query: str = ""


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str]
    path_contains: str
    remaining: int


class GmailState:
    """The emulated service: mailboxes, tokens, quota, faults and the request log."""

    def __init__(self, *, seed: int = 7) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        #: access token -> user key (a mailbox in `mailboxes`).
        self.tokens: dict[str, str] = {}
        self.requests: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        #: Quota in units per minute per user (None = unlimited) and its bucket size.
        self.quota_units_per_minute: float | None = None
        self.quota_burst: float = 0.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self.throttled = 0
        #: Seconds each messages.get takes (slows a backfill down for crash tests).
        self.delay = 0.0
        #: Expiry horizon: only the last `history_keep` history ids stay valid as a
        #: `startHistoryId` (None = all; `expire_history` prunes everything at once).
        self.history_keep: int | None = None
        self.units_spent: dict[str, int] = {}
        #: Text bodies above this many bytes are served as an attachment (None = never).
        self.inline_body_limit: int | None = INLINE_BODY_LIMIT
        self.lock = threading.RLock()
        #: Where watched mailboxes publish changes: (topicName, data) -> None.
        self.publish: Callable[[str, dict[str, Any]], None] | None = None
        self._random = random.Random(seed)
        self._next_id = 0x18B0_0000_0000_0000

    # --- setup and mutation helpers -----------------------------------------------------------

    def add_user(self, user: str, token: str, email_address: str | None = None) -> Mailbox:
        with self.lock:
            box = self.mailboxes.setdefault(user, Mailbox(email_address or f"{user}@example.com"))
            self.tokens[token] = user
            return box

    def set_quota(self, units_per_minute: float | None, *, burst: float | None = None) -> None:
        """Per-user token bucket: refills at `units_per_minute`, holds `burst` units."""
        with self.lock:
            self.quota_units_per_minute = units_per_minute
            self.quota_burst = burst if burst is not None else (units_per_minute or 0) / 60
            self._buckets.clear()

    def inject(
        self,
        status: int,
        body: Any = None,
        *,
        path_contains: str = "",
        count: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next `count` requests whose path contains `path_contains` answer this."""
        with self.lock:
            self.faults.append(Fault(status, body, dict(headers or {}), path_contains, count))

    def _record(self, box: Mailbox, kind: str, message: GmailMessage, **extra: Any) -> None:
        box.history_id += 1
        ref = {"id": message.id, "threadId": message.thread_id}
        item: dict[str, Any] = {"message": {**ref, "labelIds": list(message.label_ids)}}
        item.update(extra)
        box.history.append({"id": str(box.history_id), "messages": [ref], kind: [item]})
        message.history_id = box.history_id
        self._notify(box, message)
        if self.history_keep is not None:  # the expiry horizon: only recent history survives
            box.history_floor = max(box.history_floor, box.history_id - self.history_keep)
            box.history = [r for r in box.history if int(r["id"]) > box.history_floor]

    def add_message(
        self,
        user: str,
        raw: bytes,
        *,
        labels: Sequence[str] = ("INBOX", "UNREAD"),
        internal_date: datetime | int | None = None,
        thread_id: str | None = None,
        record_history: bool = True,
    ) -> str:
        """Store a message (its raw RFC 5322 bytes) and return its id."""
        with self.lock:
            box = self.mailboxes[user]
            self._next_id += 1 + self._random.randrange(1, 4096)
            message_id = f"{self._next_id:016x}"
            if internal_date is None:
                when = int(time.time() * 1000)
            elif isinstance(internal_date, datetime):
                when = int(internal_date.timestamp() * 1000)
            else:
                when = int(internal_date)
            message = GmailMessage(
                message_id, thread_id or message_id, list(labels), raw, when, box.history_id
            )
            box.messages[message_id] = message
            if record_history:
                self._record(box, "messagesAdded", message)
            else:
                box.history_id += 1
                message.history_id = box.history_id
            return message_id

    def _notify(self, box: Mailbox, message: GmailMessage) -> None:
        watch = box.watch
        if watch is None or self.publish is None or watch["expiration"] < time.time() * 1000:
            return
        labels = set(watch["labelIds"])
        if labels:
            hit = bool(labels & set(message.label_ids))
            if hit != (watch["behavior"] == "include"):
                return
        data = {"emailAddress": box.email_address, "historyId": box.history_id}
        self.publish(watch["topicName"], data)

    def expire_watch(self, user: str) -> None:
        """The watch lapses (7 days without renewal): no more notifications."""
        with self.lock:
            box = self.mailboxes[user]
            if box.watch is not None:
                box.watch["expiration"] = 0

    def delete_message(self, user: str, message_id: str) -> None:
        with self.lock:
            box = self.mailboxes[user]
            message = box.messages.pop(message_id)
            self._record(box, "messagesDeleted", message)

    def relabel(
        self, user: str, message_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        with self.lock:
            box = self.mailboxes[user]
            message = box.messages[message_id]
            added = [label for label in add if label not in message.label_ids]
            removed = [label for label in remove if label in message.label_ids]
            message.label_ids = [x for x in message.label_ids if x not in removed] + added
            if added:
                self._record(box, "labelsAdded", message, labelIds=added)
            if removed:
                self._record(box, "labelsRemoved", message, labelIds=removed)

    def trash(self, user: str, message_id: str) -> None:
        self.relabel(user, message_id, add=["TRASH"])

    def untrash(self, user: str, message_id: str) -> None:
        self.relabel(user, message_id, remove=["TRASH"])

    def expire_history(self, user: str) -> None:
        """Prune all history: any older `startHistoryId` now answers 404."""
        with self.lock:
            box = self.mailboxes[user]
            box.history_floor = box.history_id
            box.history.clear()

    def count(self, endpoint: str | None = None) -> int:
        """Requests logged (HTTP requests and calls inside batches), optionally of one kind."""
        with self.lock:
            return sum(1 for r in self.requests if endpoint in (None, r.endpoint))

    # --- request handling ---------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.path_contains in path:
                fault.remaining -= 1
                return fault
        return None

    def _spend(self, user: str, units: int) -> bool:
        if self.quota_units_per_minute is None:
            return True
        rate = self.quota_units_per_minute / 60.0
        now = time.monotonic()
        tokens, updated = self._buckets.get(user, (self.quota_burst, now))
        tokens = min(self.quota_burst, tokens + (now - updated) * rate)
        if tokens + 1e-9 < units:
            self._buckets[user] = (tokens, now)
            return False
        self._buckets[user] = (tokens - units, now)
        return True

    def handle(
        self,
        method: str,
        target: str,
        authorization: str | None,
        *,
        batch: bool = False,
        body: bytes = b"",
    ) -> tuple[int, Any, dict[str, str]]:
        """Serve one API call: (status, JSON body, extra headers)."""
        parts = urlsplit(target)
        path = parts.path
        params: list[tuple[str, str]] = parse_qsl(parts.query, keep_blank_values=True)
        with self.lock:
            endpoint = _endpoint_of(method, path)
            user = None
            token = (authorization or "").removeprefix("Bearer ").strip()
            if authorization and authorization.startswith("Bearer ") and token in self.tokens:
                user = self.tokens[token]
            status, answer, headers = self._dispatch(method, path, params, user, endpoint, body)
            self.requests.append(
                LoggedRequest(method, path, endpoint, status, user, batch, parts.query)
            )
        if self.delay and endpoint == "messages.get":
            time.sleep(self.delay)
        return status, answer, headers

    def _dispatch(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        user: str | None,
        endpoint: str,
        body: bytes = b"",
    ) -> tuple[int, Any, dict[str, str]]:
        if user is None:
            return (
                401,
                UNAUTHENTICATED,
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        fault = self._take_fault(path)
        if fault is not None:
            return fault.status, fault.body, fault.headers
        match = re.fullmatch(r"/gmail/v1/users/([^/]+)(/.*)", path)
        if not match or endpoint == "unknown":
            return 404, NOT_FOUND, {}
        box = self.mailboxes[user]
        if match.group(1) not in ("me", box.email_address):
            return (
                403,
                google_error(
                    403,
                    "Delegation denied for " + box.email_address,
                    "forbidden",
                    "PERMISSION_DENIED",
                ),
                {},
            )
        units = QUOTA_UNITS.get(endpoint, 1)
        if not self._spend(user, units):
            self.throttled += 1
            return 429, RATE_LIMITED, {}
        self.units_spent[user] = self.units_spent.get(user, 0) + units
        rest = match.group(2)
        single = dict(params)
        if endpoint == "getProfile":
            return 200, self._profile(box), {}
        if endpoint == "watch":
            return self._watch(box, body)
        if endpoint == "stop":
            box.watch = None
            return 204, None, {}
        if endpoint == "messages.list":
            return self._list(box, params, single)
        if endpoint == "history.list":
            return self._history(box, params, single)
        message_id = rest.split("/")[2]
        message = box.messages.get(message_id)
        if message is None:
            return 404, NOT_FOUND, {}
        if endpoint == "attachments.get":
            return self._attachment(message, rest.split("/")[4])
        fmt = single.get("format", "full")
        if fmt not in ("minimal", "full", "raw", "metadata"):
            return (
                400,
                google_error(
                    400, f"Invalid value at 'format' ({fmt})", "invalidArgument", "INVALID_ARGUMENT"
                ),
                {},
            )
        wanted = [value for key, value in params if key == "metadataHeaders"]
        return 200, render_message(message, fmt, wanted, self.inline_body_limit), {}

    def _watch(self, box: Mailbox, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        topic = request.get("topicName") if isinstance(request, dict) else None
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            message = "Invalid topicName does not match projects/SOME-PROJECT/topics/SOME-TOPIC"
            return 400, google_error(400, message, "invalidArgument", "INVALID_ARGUMENT"), {}
        assert isinstance(request, dict)
        behavior = request.get("labelFilterBehavior") or request.get("labelFilterAction")
        expiration = int(time.time() * 1000) + WATCH_SECONDS * 1000
        box.watch = {
            "topicName": topic,
            "labelIds": list(request.get("labelIds") or []),
            "behavior": str(behavior or "include").lower(),
            "expiration": expiration,
        }
        return 200, {"historyId": str(box.history_id), "expiration": str(expiration)}, {}

    def _profile(self, box: Mailbox) -> dict[str, Any]:
        return {
            "emailAddress": box.email_address,
            "messagesTotal": len(box.messages),
            "threadsTotal": len({m.thread_id for m in box.messages.values()}),
            "historyId": str(box.history_id),
        }

    def _list(
        self, box: Mailbox, params: list[tuple[str, str]], single: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            size = min(500, max(1, int(single.get("maxResults", "100"))))
        except ValueError:
            return 400, google_error(400, "Invalid maxResults", "invalid", "INVALID_ARGUMENT"), {}
        label_ids = [value for key, value in params if key == "labelIds"]
        include = single.get("includeSpamTrash", "false").lower() == "true"
        query = single.get("q", "")
        key = (query, tuple(label_ids), include)
        cached = box.listings.get(key)
        if cached is not None and cached[0] == box.history_id:
            found = cached[1]
        else:
            matcher = _Query(query, include)
            found = [
                m
                for m in box.messages.values()
                if all(label in m.label_ids for label in label_ids) and matcher.matches(m)
            ]
            found.sort(key=lambda m: (m.internal_date, m.id), reverse=True)
            box.listings[key] = (box.history_id, found)
        fingerprint = hashlib.sha256(repr((query, label_ids, include)).encode()).hexdigest()[:12]
        offset = 0
        if single.get("pageToken"):
            decoded = _decode_token(single["pageToken"])
            if decoded is None or decoded.get("f") != fingerprint:
                return (
                    400,
                    google_error(400, "Invalid pageToken", "invalidArgument", "INVALID_ARGUMENT"),
                    {},
                )
            offset = int(decoded["o"])
        page = found[offset : offset + size]
        if not page:
            return 200, {"resultSizeEstimate": 0}, {}
        body: dict[str, Any] = {
            "messages": [{"id": m.id, "threadId": m.thread_id} for m in page],
            "resultSizeEstimate": len(found),
        }
        if offset + size < len(found):
            body["nextPageToken"] = _encode_token({"o": offset + size, "f": fingerprint})
        return 200, body, {}

    def _history(
        self, box: Mailbox, params: list[tuple[str, str]], single: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        start_text = single.get("startHistoryId")
        if not start_text or not start_text.isdigit():
            return (
                400,
                google_error(400, "Invalid startHistoryId", "invalidArgument", "INVALID_ARGUMENT"),
                {},
            )
        start = int(start_text)
        if start < box.history_floor:
            return 404, NOT_FOUND, {}
        size = min(500, max(1, int(single.get("maxResults", "100"))))
        types = {_TYPE_PARAM.get(v, v) for k, v in params if k == "historyTypes"}
        label = single.get("labelId")
        records = []
        for record in box.history:
            if int(record["id"]) <= start:
                continue
            if types and not types & record.keys():
                continue
            if label and not any(
                label in item["message"].get("labelIds", []) or label in item.get("labelIds", [])
                for kind in HISTORY_TYPES
                for item in record.get(kind, [])
            ):
                continue
            records.append(record)
        offset = 0
        if single.get("pageToken"):
            decoded = _decode_token(single["pageToken"])
            if decoded is None:
                return (
                    400,
                    google_error(400, "Invalid pageToken", "invalidArgument", "INVALID_ARGUMENT"),
                    {},
                )
            offset = int(decoded["o"])
        page = records[offset : offset + size]
        body: dict[str, Any] = {"historyId": str(box.history_id)}
        if page:
            body = {"history": page, **body}
        if offset + size < len(records):
            body["nextPageToken"] = _encode_token({"o": offset + size})
        return 200, body, {}

    def _attachment(
        self, message: GmailMessage, attachment_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        parsed = email.message_from_bytes(message.raw)
        for part_id, part in _walk(parsed, ""):
            if _attachment_id(message.id, part_id) == attachment_id:
                data = _leaf_bytes(part)
                return 200, {"size": len(data), "data": b64url(data)}, {}
        return 404, NOT_FOUND, {}


def _endpoint_of(method: str, path: str) -> str:
    if method == "POST" and re.fullmatch(r"/gmail/v1/users/[^/]+/watch", path):
        return "watch"
    if method == "POST" and re.fullmatch(r"/gmail/v1/users/[^/]+/stop", path):
        return "stop"
    if method != "GET":
        return "unknown"
    if re.fullmatch(r"/gmail/v1/users/[^/]+/profile", path):
        return "getProfile"
    if re.fullmatch(r"/gmail/v1/users/[^/]+/messages", path):
        return "messages.list"
    if re.fullmatch(r"/gmail/v1/users/[^/]+/messages/[^/]+", path):
        return "messages.get"
    if re.fullmatch(r"/gmail/v1/users/[^/]+/messages/[^/]+/attachments/[^/]+", path):
        return "attachments.get"
    if re.fullmatch(r"/gmail/v1/users/[^/]+/history", path):
        return "history.list"
    return "unknown"


def _encode_token(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    return value if isinstance(value, dict) and "o" in value else None


def _to_epoch(value: str) -> float | None:
    if value.isdigit():
        return float(value)
    for fmt in ("%Y/%m/%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


class _Query:
    """The subset of Gmail search used by clients: dates, in:/label:, free words."""

    def __init__(self, query: str, include_spam_trash: bool) -> None:
        self.checks: list[Any] = []
        hidden = {"SPAM", "TRASH"}
        for term in query.split():
            negate = term.startswith("-")
            word = term[1:] if negate else term
            key, _, value = word.partition(":")
            key = key.lower()
            if key in ("after", "before") and _to_epoch(value) is not None:
                bound = _to_epoch(value) or 0.0
                if key == "after":
                    self.checks.append(
                        lambda m, b=bound, n=negate: (m.internal_date / 1000 > b) != n
                    )
                else:
                    self.checks.append(
                        lambda m, b=bound, n=negate: (m.internal_date / 1000 < b) != n
                    )
            elif key in ("in", "label") and value:
                label = value.upper()
                if label == "ANYWHERE":
                    include_spam_trash = True
                    continue
                if label in hidden and not negate:
                    include_spam_trash = True
                self.checks.append(lambda m, lab=label, n=negate: (lab in m.label_ids) != n)
            else:
                needle = word.lower().encode()
                self.checks.append(lambda m, w=needle, n=negate: (w in m.raw.lower()) != n)
        if not include_spam_trash:
            self.checks.append(lambda m: not hidden & set(m.label_ids))

    def matches(self, message: GmailMessage) -> bool:
        return all(check(message) for check in self.checks)


# --- rendering a message ---------------------------------------------------------------------


def _clean_header(value: Any) -> str:
    text = str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"\r?\n[ \t]*", " ", text).strip()


def _attachment_id(message_id: str, part_id: str) -> str:
    digest = hashlib.sha256(f"{message_id}/{part_id}".encode()).digest()
    return "ANGjdJ" + base64.urlsafe_b64encode(digest * 3).decode().rstrip("=")


def _walk(message: Message, part_id: str) -> Iterable[tuple[str, Message]]:
    yield part_id, message
    payload = message.get_payload()
    if isinstance(payload, list):
        for index, child in enumerate(payload):
            if isinstance(child, Message):
                child_id = f"{part_id}.{index}" if part_id else str(index)
                yield from _walk(child, child_id)


def _leaf_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return str(payload).encode("utf-8", "surrogateescape") if payload else b""


def _param(part: Message, header: str, key: str) -> str:
    for name, value in part.raw_items():
        if name.lower() != header:
            continue
        if value.isascii():
            found = part.get_param(key, None, header=header)
            if found is None:
                return ""
            return _clean_header(email.utils.collapse_rfc2231_value(found))
        # Raw 8-bit bytes (UTF-8 in practice): decode them before reading the parameter.
        try:
            parsed: Any = email.policy.default.header_factory(name, _clean_header(value))
            return str(parsed.params.get(key) or "")
        except Exception:
            return ""
    return ""


def _filename(part: Message) -> str:
    """The decoded file name (RFC 2231 and the common RFC 2047-in-quotes), as Gmail shows it."""
    name = _param(part, "content-disposition", "filename") or _param(part, "content-type", "name")
    if "=?" in name:
        with contextlib.suppress(Exception):
            name = str(make_header(decode_header(name)))
    return name


def _is_attachment(part: Message) -> bool:
    """Stored apart (an attachmentId, no inline data): files, except inline named text."""
    disposition = "".join(v for k, v in part.raw_items() if k.lower() == "content-disposition")
    disposition = disposition.strip().lower()
    if disposition.startswith("attachment"):
        return True
    inline = not disposition or disposition.startswith("inline")
    inline_text = inline and part.get_content_maintype() == "text"
    return bool(_filename(part)) and not inline_text


def _payload(
    message_id: str,
    part: Message,
    part_id: str,
    header_filter: Sequence[str] | None,
    inline_limit: int | None = None,
) -> dict[str, Any]:
    headers = [{"name": k, "value": _clean_header(v)} for k, v in part.raw_items()]
    if header_filter is not None:
        wanted = {h.lower() for h in header_filter}
        headers = [h for h in headers if not wanted or h["name"].lower() in wanted]
    filename = _filename(part)
    node: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": _clean_header(filename),
        "headers": headers,
    }
    if header_filter is not None:
        node["body"] = {"size": 0}
        return node
    payload = part.get_payload()
    if isinstance(payload, list):
        children = [c for c in payload if isinstance(c, Message)]
        node["parts"] = [
            _payload(message_id, child, f"{part_id}.{i}" if part_id else str(i), None, inline_limit)
            for i, child in enumerate(children)
        ]
        if part.get_content_type() == "message/rfc822" and children:
            size = len(children[0].as_bytes()) if _safe_bytes(children[0]) else 0
            node["body"] = {"attachmentId": _attachment_id(message_id, part_id), "size": size}
        else:
            node["body"] = {"size": 0}
        return node
    data = _leaf_bytes(part)
    if part.get_content_maintype() == "text" and not _is_attachment(part):
        data = _as_utf8(data, part.get_content_charset())
        if inline_limit is not None and len(data) > inline_limit:
            node["body"] = {"attachmentId": _attachment_id(message_id, part_id), "size": len(data)}
            return node
    if _is_attachment(part):
        node["body"] = {"attachmentId": _attachment_id(message_id, part_id), "size": len(data)}
    elif data:
        node["body"] = {"size": len(data), "data": b64url(data)}
    else:
        node["body"] = {"size": 0}
    return node


def _as_utf8(data: bytes, charset: str | None) -> bytes:
    """A text body as `format=full` hands it over: UTF-8, whatever the part declares."""
    if not charset or charset.lower() in ("utf-8", "utf8", "us-ascii"):
        return data
    # Mail labelled GB2312/GBK is read as their superset, as mail readers do.
    charset = {"gb2312": "gb18030", "gbk": "gb18030"}.get(charset.lower(), charset)
    try:
        return data.decode(charset).encode("utf-8")
    except (LookupError, UnicodeDecodeError):
        return data


def _safe_bytes(message: Message) -> bool:
    try:
        message.as_bytes()
    except Exception:
        return False
    return True


def _snippet(parsed: Message) -> str:
    for _, part in _walk(parsed, ""):
        if part.get_content_type() == "text/plain" and not _is_attachment(part):
            charset = part.get_content_charset() or "utf-8"
            try:
                text = _leaf_bytes(part).decode(charset, "replace")
            except LookupError:
                text = _leaf_bytes(part).decode("utf-8", "replace")
            return " ".join(text.split())[:200]
    return ""


def render_message(
    message: GmailMessage,
    fmt: str,
    metadata_headers: Sequence[str] = (),
    inline_body_limit: int | None = INLINE_BODY_LIMIT,
) -> dict[str, Any]:
    """A Message resource in the given format."""
    parsed = email.message_from_bytes(message.raw)
    body: dict[str, Any] = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.label_ids),
        "snippet": _snippet(parsed),
        "sizeEstimate": len(message.raw),
        "historyId": str(message.history_id),
        "internalDate": str(message.internal_date),
    }
    if fmt == "raw":
        body["raw"] = b64url(message.raw)
    elif fmt == "full":
        body["payload"] = _payload(message.id, parsed, "", None, inline_body_limit)
    elif fmt == "metadata":
        body["payload"] = _payload(message.id, parsed, "", list(metadata_headers))
    return body


# --- HTTP --------------------------------------------------------------------------------------


def _json_response(status: int, body: Any, headers: Mapping[str, str]) -> Response:
    if body is None:
        return Response(status_code=status, headers=dict(headers))
    return JSONResponse(body, status_code=status, headers=dict(headers))


def _parse_batch(content_type: str, body: bytes) -> list[tuple[str, str, str, dict[str, str]]]:
    """(content id, method, target, headers) of each `application/http` part."""
    envelope = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    calls = []
    for part in envelope.get_payload() if envelope.is_multipart() else []:
        if not isinstance(part, Message):
            continue
        text = part.get_payload(decode=False)
        if isinstance(text, list):
            continue
        lines = str(text).replace("\r\n", "\n").split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        request_line = lines[0].split()
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line.strip():
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        content_id = str(part.get("Content-ID", "")).strip().strip("<>")
        calls.append((content_id, request_line[0], request_line[1], headers))
    return calls


def create_app(state: GmailState) -> Starlette:
    async def api(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        status, body, headers = state.handle(
            request.method,
            target,
            request.headers.get("authorization"),
            body=await request.body() if request.method == "POST" else b"",
        )
        return _json_response(status, body, headers)

    async def batch(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/mixed"):
            return JSONResponse(
                google_error(
                    400, "Batch requests need multipart/mixed", "badRequest", "INVALID_ARGUMENT"
                ),
                status_code=400,
            )
        calls = _parse_batch(content_type, await request.body())
        if len(calls) > 100:
            return JSONResponse(
                google_error(
                    400,
                    "Too many requests in batch; the limit is 100",
                    "badRequest",
                    "INVALID_ARGUMENT",
                ),
                status_code=400,
            )
        outer_auth = request.headers.get("authorization")
        with state.lock:
            state.requests.append(LoggedRequest("POST", request.url.path, "batch", 200, None))
        answers = []
        for content_id, method, target, headers in calls:
            status, body, extra = state.handle(
                method, target, headers.get("authorization", outer_auth), batch=True
            )
            answers.append((content_id, status, body, extra))
        state._random.shuffle(answers)
        boundary = f"batch_{state._random.getrandbits(64):016x}"
        chunks = []
        for content_id, status, body, extra in answers:
            payload = json.dumps(body)
            lines = [
                f"--{boundary}",
                "Content-Type: application/http",
                f"Content-ID: <response-{content_id}>",
                "",
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                "Content-Type: application/json; charset=UTF-8",
                *(f"{k}: {v}" for k, v in extra.items()),
                f"Content-Length: {len(payload.encode())}",
                "",
                payload,
            ]
            chunks.append("\r\n".join(lines))
        text = "\r\n".join(chunks) + f"\r\n--{boundary}--\r\n"
        return Response(text, media_type=f"multipart/mixed; boundary={boundary}")

    return Starlette(
        routes=[
            Route("/batch/gmail/v1", batch, methods=["POST"]),
            Route("/batch", batch, methods=["POST"]),
            Route("/gmail/v1/{rest:path}", api, methods=["GET", "POST"]),
        ]
    )


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
