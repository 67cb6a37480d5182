"""The push routes (design §8): `POST /v1/push/gmail`, `/v1/push/calendar`, `/v1/push/github`.

Each is authenticated by its sender's own proof, never by `INGESTION_API_KEY` (every endpoint
here carries `authenticates_itself = True`, and `is_self_authenticated(path)` answers for a
path, so an API-key middleware can leave them alone):

- Gmail: the Pub/Sub push OIDC token (`ingestion.push.oidc`), then the mailbox address in the
  message maps to the user whose watch recorded it;
- Calendar: a channel id we created and its secret token (compared as SHA-256 digests in
  constant time);
- GitHub: `X-Hub-Signature-256`, HMAC-SHA256 of the raw body with `GITHUB_WEBHOOK_SECRET`,
  compared in constant time (GitHub "Validating webhook deliveries").

A verified notification only enqueues the ordinary incremental sync of the pair (coalesced
with one queued or running), so every guarantee of the sync holds; the answer is quick. A
body over 64 KB is refused (413) before it is read whole. Every answer is counted in
`ingestion_push_total{provider,outcome}`. Nothing from a body or a token is logged beyond ids.

Replays: a Pub/Sub `messageId` or a GitHub `X-GitHub-Delivery` is taken once (remembered for
`SEEN_TTL`, in Redis when the queue is Redis, else in this process); a replay is acknowledged
and enqueues nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingestion import metrics
from ingestion.clock import Clock
from ingestion.errors import describe
from ingestion.providers.github.sync import GitHubState, repo_selected
from ingestion.providers.registry import account_provider_of
from ingestion.push import PUSH_PREFIX
from ingestion.push.oidc import OidcRejected, OidcVerifier
from ingestion.push.store import ChannelStore
from ingestion.queue.base import JobQueue
from ingestion.queue.jobs import Job
from ingestion.queue.keys import Keys
from ingestion.storage.accounts import find_account
from ingestion.storage.models import SyncStateRow
from ingestion.storage.state import SyncStateStore

if TYPE_CHECKING:
    from ingestion.services import Services

__all__ = [
    "GITHUB_SYNC_EVENTS",
    "MAX_BODY_BYTES",
    "SEEN_TTL",
    "push_routes",
]

log = structlog.get_logger("ingestion.push")

MAX_BODY_BYTES = 64 * 1024
#: How long a delivery id is remembered (Pub/Sub retains unacknowledged messages up to 7 days;
#: GitHub's own redeliveries are limited to the past 3 days).
SEEN_TTL = 7 * 24 * 3600
#: GitHub events that change what the GitHub sync mirrors.
GITHUB_SYNC_EVENTS = frozenset(
    {
        "push",
        "issues",
        "issue_comment",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
    }
)
_CALENDAR_STATES = frozenset({"sync", "exists", "not_exists"})

Endpoint = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


class _NoQueue(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The body, refused as soon as it passes `MAX_BODY_BYTES` (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class SeenDeliveries(Protocol):
    async def first_time(self, provider: str, delivery_id: str) -> bool:
        """Remember the id; False when it was already taken within `SEEN_TTL`."""
        ...

    async def forget(self, provider: str, delivery_id: str) -> None:
        """The delivery could not be taken after all (the queue failed): let a retry in."""
        ...


class RedisSeen:
    """Across every API process: `SET key 1 NX EX ttl`."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def first_time(self, provider: str, delivery_id: str) -> bool:
        key = self.keys.push_seen(provider, delivery_id)
        return bool(await self.redis.set(key, "1", nx=True, ex=SEEN_TTL))

    async def forget(self, provider: str, delivery_id: str) -> None:
        await self.redis.delete(self.keys.push_seen(provider, delivery_id))


class LocalSeen:
    """In this process (the in-process queue has one API): bounded, oldest forgotten first."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def first_time(self, provider: str, delivery_id: str) -> bool:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now - SEEN_TTL:
            self._seen.popitem(last=False)
        key = (provider, delivery_id)
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True

    async def forget(self, provider: str, delivery_id: str) -> None:
        self._seen.pop((provider, delivery_id), None)


def _answer(provider: str, outcome: str, status: int, message: str | None = None) -> Response:
    metrics.PUSH.labels(provider=provider, outcome=outcome).inc()
    if status == 204:
        return Response(status_code=204)
    body: dict[str, Any] = {"outcome": outcome}
    if message:
        body["error" if status >= 400 else "message"] = message
    return JSONResponse(body, status_code=status)


class _Push:
    def __init__(self, services: Services, queue: JobQueue | None, seen: SeenDeliveries) -> None:
        self.services = services
        self.settings = services.settings
        self.queue = queue
        self.seen = seen
        self.channels = ChannelStore(services.db)
        self.states = SyncStateStore(services.db)
        self.clock: Clock = services.clock
        s = self.settings
        self.verifier = (
            OidcVerifier(
                services.http,
                s.google_oidc_certs_url,
                s.gmail_push_audience or "",
                s.gmail_push_service_account or "",
            )
            if s.gmail_pubsub_topic
            else None
        )
        secret = s.github_webhook_secret
        self.github_secret = secret.get_secret_value().encode() if secret else None

    async def _enqueue(self, provider: str, user_id: str) -> str:
        """`enqueued`, `coalesced`, `follow_up`, or `unknown` when the user no longer has the
        account (removed without its channels: a job would only fail); `_NoQueue` when no queue
        takes it (the sender retries)."""
        async with self.services.db.session() as session:
            if await find_account(session, user_id, account_provider_of(provider)) is None:
                return "unknown"
        if self.queue is None:
            raise _NoQueue("no job queue runs in this process (set REDIS_URL)")
        try:
            # rerun: a job already running may have read before this change; it is followed by
            # one more run instead of swallowing the notification.
            result = await self.queue.enqueue(Job(provider=provider, user_id=user_id), rerun=True)
        except Exception as exc:
            log.warning("push enqueue failed", provider=provider, error=describe(exc)[:300])
            raise _NoQueue(f"the queue did not accept the job: {type(exc).__name__}") from None
        if result.widening == "follow-up":
            return "follow_up"
        return "coalesced" if result.coalesced else "enqueued"

    # --- Gmail (Cloud Pub/Sub push) ---------------------------------------------------------
    async def gmail(self, request: Request) -> Response:
        if self.verifier is None:
            return _answer("gmail", "disabled", 404, "Gmail push is off (GMAIL_PUBSUB_TOPIC)")
        try:
            raw = await _read_body(request)
        except _TooLarge:
            return _answer("gmail", "too_large", 413, "the body is larger than 64 KB")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _answer("gmail", "unauthenticated", 401, "an OIDC bearer token is required")
        try:
            await self.verifier.verify(token.strip())
        except OidcRejected as exc:
            status = (
                503
                if exc.outcome == "unavailable"
                else 403
                if (exc.outcome == "forbidden")
                else 401
            )
            log.warning("gmail push refused", outcome=exc.outcome, reason=str(exc))
            return _answer("gmail", exc.outcome, status, str(exc))
        parsed = _pubsub_message(raw)
        if isinstance(parsed, str):
            log.warning("gmail push malformed", reason=parsed)
            return _answer("gmail", "malformed", 400, parsed)
        message_id, address, history_id = parsed
        channels = await self.channels.by_resource("gmail", address.lower())
        if not channels:
            # Acknowledged: Pub/Sub would redeliver anything else, and no user wants it.
            return _answer("gmail", "unknown", 204)
        if not await self.seen.first_time("gmail", message_id):
            return _answer("gmail", "replayed", 204)
        outcome = "stale"
        for channel in channels:
            state = await self.states.load(channel.user_id, "gmail")
            if _not_newer(history_id, state.cursor.get("historyId")):
                continue  # stale: the last sync already read past this change
            try:
                outcome = await self._enqueue("gmail", channel.user_id)
            except _NoQueue as exc:
                await self.seen.forget("gmail", message_id)  # Pub/Sub redelivers: let it in
                return _answer("gmail", "queue_unavailable", 503, str(exc))
            await self.channels.touch(channel.channel_id, self.clock.now())
        return _answer("gmail", outcome, 204)

    # --- Calendar (watch channels) ----------------------------------------------------------
    async def calendar(self, request: Request) -> Response:
        try:
            await _read_body(request)  # empty by Google's design; bounded all the same
        except _TooLarge:
            return _answer("calendar", "too_large", 413, "the body is larger than 64 KB")
        channel_id = request.headers.get("x-goog-channel-id", "")
        token = request.headers.get("x-goog-channel-token", "")
        state = request.headers.get("x-goog-resource-state", "")
        if not channel_id or len(channel_id) > 64 or not token or len(token) > 256:
            return _answer("calendar", "unauthenticated", 401, "unknown channel or wrong token")
        channel = await self.channels.get(channel_id)
        if channel is None or channel.provider != "calendar" or not channel.token_matches(token):
            return _answer("calendar", "unauthenticated", 401, "unknown channel or wrong token")
        if state not in _CALENDAR_STATES:
            return _answer("calendar", "malformed", 400, "X-Goog-Resource-State is not known")
        if state == "sync":
            return _answer("calendar", "acknowledged", 200)
        try:
            outcome = await self._enqueue("calendar", channel.user_id)
        except _NoQueue as exc:
            return _answer("calendar", "queue_unavailable", 503, str(exc))
        await self.channels.touch(channel.channel_id, self.clock.now())
        return _answer("calendar", outcome, 200)

    # --- GitHub (webhooks) ------------------------------------------------------------------
    async def github(self, request: Request) -> Response:
        if self.github_secret is None:
            return _answer("github", "disabled", 404, "GitHub webhooks are off")
        try:
            raw = await _read_body(request)
        except _TooLarge:
            return _answer("github", "too_large", 413, "the body is larger than 64 KB")
        given = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(self.github_secret, raw, hashlib.sha256).hexdigest()
        if not given:
            return _answer("github", "unauthenticated", 401, "X-Hub-Signature-256 is missing")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _answer("github", "forged", 401, "the signature does not match")
        delivery = request.headers.get("x-github-delivery", "")
        event = request.headers.get("x-github-event", "")
        if not delivery or len(delivery) > 64 or not event or len(event) > 64:
            return _answer("github", "malformed", 400, "X-GitHub-Delivery and -Event are required")
        if not await self.seen.first_time("github", delivery):
            return _answer("github", "replayed", 200, "this delivery was already taken")
        if event == "ping":
            return _answer("github", "ping", 200, "pong")
        if event not in GITHUB_SYNC_EVENTS:
            return _answer("github", "ignored", 200, f"event {event[:64]} changes nothing mirrored")
        try:
            body = json.loads(raw)
            full_name = body["repository"]["full_name"]
        except (ValueError, KeyError, TypeError):
            return _answer("github", "malformed", 400, "the body has no repository.full_name")
        if not isinstance(full_name, str) or len(full_name) > 200 or "/" not in full_name:
            return _answer("github", "malformed", 400, "repository.full_name is not owner/name")
        users = await self._github_users(full_name)
        if not users:
            return _answer("github", "unknown", 200, "no user mirrors this repository")
        try:
            outcomes = [await self._enqueue("github", user_id) for user_id in users]
        except _NoQueue as exc:
            await self.seen.forget("github", delivery)  # GitHub's redelivery gets in
            return _answer("github", "queue_unavailable", 503, str(exc))
        outcome = next(
            (o for o in ("enqueued", "follow_up", "coalesced") if o in outcomes), "unknown"
        )
        return _answer("github", outcome, 200, f"{len(users)} sync(s) requested")

    async def _github_users(self, full_name: str) -> list[str]:
        """Users whose GitHub scope includes the repository (listed for them and selected by
        GITHUB_REPOS_ALLOW / _DENY), from their sync cursors."""
        wanted = full_name.lower()
        s = self.settings
        if not repo_selected(full_name, s.github_repos_allow, s.github_repos_deny):
            return []
        users: list[str] = []
        async with self.services.db.session() as session:
            rows = await session.execute(
                select(SyncStateRow.user_id, SyncStateRow.cursor).where(
                    SyncStateRow.provider == "github"
                )
            )
            for user_id, cursor in rows:
                repos = GitHubState.load(cursor or {}).repos
                if any(k.lower() == wanted and info.listed for k, info in repos.items()):
                    users.append(user_id)
        return users


def _pubsub_message(raw: bytes) -> tuple[str, str, str] | str:
    """`(messageId, emailAddress, historyId)` of a Pub/Sub push body, or what is wrong."""
    try:
        envelope = json.loads(raw)
        message = envelope["message"]
        data = base64.b64decode(message["data"], validate=False, altchars=b"-_")
        payload = json.loads(data)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return "the body is not a Pub/Sub push message with base64 JSON data"
    if not isinstance(payload, Mapping):
        return "the message data is not a JSON object"
    message_id = message.get("messageId") or message.get("message_id")
    address = payload.get("emailAddress")
    history_id = payload.get("historyId")
    if isinstance(history_id, int) and not isinstance(history_id, bool):
        history_id = str(history_id)
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 128:
        return "the message has no messageId"
    if not isinstance(address, str) or not 0 < len(address) <= 320 or "@" not in address:
        return "the message data has no emailAddress"
    if not isinstance(history_id, str) or not history_id.isdigit() or len(history_id) > 20:
        return "the message data has no numeric historyId"
    return message_id, address, history_id


def _not_newer(history_id: str, stored: Any) -> bool:
    """True when the stored cursor is already at or past the notified history id."""
    if not isinstance(stored, str | int) or not str(stored).isdigit():
        return False
    return int(history_id) <= int(str(stored))


def push_routes(services: Services, queue: JobQueue | None) -> list[Route]:
    """The three push routes, for `api.create_app` to mount."""
    from ingestion.queue.redis_streams import RedisJobQueue

    seen: SeenDeliveries = (
        RedisSeen(queue.redis, queue.keys) if isinstance(queue, RedisJobQueue) else LocalSeen()
    )
    push = _Push(services, queue, seen)
    routes = []
    for name, endpoint in (
        ("gmail", push.gmail),
        ("calendar", push.calendar),
        ("github", push.github),
    ):
        marked = _self_authenticated(endpoint)
        routes.append(Route(f"{PUSH_PREFIX}{name}", marked, methods=["POST"]))
    return routes


def _self_authenticated(endpoint: Endpoint) -> Endpoint:
    async def handler(request: Request) -> Response:
        return await endpoint(request)

    handler.authenticates_itself = True  # type: ignore[attr-defined]
    return handler
