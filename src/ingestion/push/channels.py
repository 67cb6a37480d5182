"""Creating, renewing and stopping push channels: Gmail watches and Calendar watch channels.

Promises:

- **Gmail** (`GMAIL_PUBSUB_TOPIC` set): after a successful Gmail sync the account has a watch
  (`users.watch` with `topicName`, `labelIds` SPAM and TRASH, `labelFilterBehavior` exclude;
  Gmail API reference, users.watch). The mailbox address from `users.getProfile` is recorded
  to map Pub/Sub's `emailAddress` to the user. A watch lasts 7 days; it is renewed when it is
  older than `RENEW_EVERY` minus `PUSH_POLL_INTERVAL`, so with a sync at least every
  `PUSH_POLL_INTERVAL` (at most 12 h) it is renewed at least once a day.
- **Calendar** (`PUBLIC_BASE_URL` set): after a successful Calendar sync every mirrored calendar
  has a channel (`events.watch`, type `web_hook`, a random id and a random secret `token` of
  which only a digest is stored; Calendar "Push notifications" guide). A channel expiring
  within a day plus `PUSH_POLL_INTERVAL` is replaced by a new one before the old one is stopped
  (no gap); a channel of a calendar no longer mirrored is stopped (`channels.stop`).
- A failed watch or renewal never fails the sync: the pair's channels are marked failing, push
  shows `expired`, and the scheduler polls the pair on its cron schedule again.
- `stop_push(user, provider)` stops every channel of a pair (`users.stop`, `channels.stop`) and
  forgets it: what account removal calls. A channel that cannot be stopped (the grant is gone)
  is forgotten anyway; Google stops sending at its expiration, and notifications for a channel
  we no longer know are refused.

Notifications only ever enqueue the ordinary incremental sync (`ingestion.push.routes`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from ingestion.clock import Clock
from ingestion.config import Settings
from ingestion.errors import IngestionError, describe
from ingestion.providers.base import TokenSource
from ingestion.providers.http import ApiClient, api_error
from ingestion.push.store import ChannelStore, ChannelView, token_digest
from ingestion.storage.db import Database
from ingestion.storage.state import SyncStateStore

__all__ = ["CALENDAR_PATH", "GMAIL_CHANNEL_PREFIX", "RENEW_EVERY", "PushChannels"]

log = structlog.get_logger("ingestion.push")

GMAIL_CHANNEL_PREFIX = "gmail:"
CALENDAR_PATH = "/v1/push/calendar"
#: A Gmail watch is renewed at least this often (Gmail's push guide: "at least every 7 days";
#: Google recommends once a day).
RENEW_EVERY = timedelta(days=1)
#: A Calendar channel is replaced when it expires within this much (plus the poll interval).
CALENDAR_RENEW_MARGIN = timedelta(days=1)
#: What a Calendar channel asks for (Google may grant less; the answer's expiration counts).
CALENDAR_TTL_SECONDS = 7 * 24 * 3600

TokensFor = Callable[[str, str], TokenSource]
Action = Callable[[str, TokenSource], Awaitable[None]]


def _expiration(raw: Any) -> datetime | None:
    """Google's `expiration`: epoch milliseconds, as a string or a number."""
    try:
        millis = int(str(raw))
    except ValueError:
        return None
    if not 0 < millis < 10**14:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC)


class PushChannels:
    """Channel upkeep for one process; `after_sync` is the sync engine's hook."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        http: httpx.AsyncClient,
        clock: Clock,
        tokens_for: TokensFor,
    ) -> None:
        self.settings = settings
        self.store = ChannelStore(db)
        self.states = SyncStateStore(db)
        self.http = http
        self.clock = clock
        self.tokens_for = tokens_for

    # --- what the rest of the service calls --------------------------------------------------
    async def after_sync(self, provider: str, user_id: str) -> None:
        """Watch, renew or stop the pair's channels after a successful sync; never raises."""
        upkeep: dict[str, tuple[bool, Action]] = {
            "gmail": (self.settings.gmail_pubsub_topic is not None, self._gmail_upkeep),
            "calendar": (self.settings.public_base_url is not None, self._calendar_upkeep),
        }
        if provider not in upkeep:
            return
        enabled, action = upkeep[provider]
        try:
            if enabled:
                await action(user_id, self.tokens_for(user_id, "google"))
            elif await self.store.of_user(provider, user_id):
                await self.stop(user_id, provider)  # push was turned off: stop what is left
        except IngestionError as exc:
            await self.store.mark_failing(provider, user_id, str(exc))
            log.warning(
                "push channel upkeep failed; polling on the cron schedule",
                provider=provider,
                user_id=user_id,
                error=str(exc),
            )
        except Exception as exc:  # upkeep must never turn a committed sync into a failure
            await self.store.mark_failing(provider, user_id, describe(exc))
            log.error(
                "push channel upkeep crashed", provider=provider, user_id=user_id, exc_info=True
            )

    async def stop(self, user_id: str, provider: str) -> int:
        """Stop and forget every push channel of (user, provider); returns how many."""
        channels = await self.store.of_user(provider, user_id)
        if not channels:
            return 0
        tokens = self.tokens_for(user_id, "google")
        for channel in channels:
            try:
                if provider == "gmail":
                    await self._gmail_stop(tokens)
                else:
                    await self._calendar_stop(tokens, channel)
            except Exception as exc:
                log.warning(
                    "push channel not stopped; forgotten (it expires by itself)",
                    provider=provider,
                    user_id=user_id,
                    error=describe(exc)[:300],
                )
        await self.store.remove(c.channel_id for c in channels)
        log.info(
            "push channels stopped", provider=provider, user_id=user_id, channels=len(channels)
        )
        return len(channels)

    # --- Gmail ---------------------------------------------------------------------------------
    def _gmail_api(self, tokens: TokenSource) -> ApiClient:
        return ApiClient(
            provider="gmail",
            http=self.http,
            tokens=tokens,
            base_url=f"{self.settings.gmail_api_url}/gmail/v1/users/me",
            attempts=3,
            max_inline_wait=10.0,
        )

    async def _gmail_upkeep(self, user_id: str, tokens: TokenSource) -> None:
        now = self.clock.now()
        current = await self.store.get(GMAIL_CHANNEL_PREFIX + user_id)
        renew_after = RENEW_EVERY - timedelta(seconds=self.settings.push_poll_interval)
        if (
            current is not None
            and current.healthy(now)
            and now - current.renewed_at < renew_after
            and current.expiration is not None
            and current.expiration - now > RENEW_EVERY
        ):
            return
        api = self._gmail_api(tokens)
        profile = await api.request("GET", "/profile", endpoint="getProfile")
        if profile.status_code != 200:
            raise api_error("gmail", "getProfile", profile)
        address = _bounded_text(_json(profile).get("emailAddress"), 320)
        if not address or "@" not in address:
            raise IngestionError("gmail getProfile: the answer has no emailAddress")
        body = {
            "topicName": self.settings.gmail_pubsub_topic,
            "labelIds": ["SPAM", "TRASH"],
            "labelFilterBehavior": "exclude",
        }
        answer = await api.request("POST", "/watch", endpoint="watch", json=body)
        if answer.status_code != 200:
            raise api_error("gmail", "watch", answer)
        watch = _json(answer)
        await self.store.save(
            channel_id=GMAIL_CHANNEL_PREFIX + user_id,
            provider="gmail",
            user_id=user_id,
            resource=address.lower(),
            renewed_at=now,
            expiration=_expiration(watch.get("expiration")) or now + timedelta(days=7),
            history_id=_bounded_text(watch.get("historyId"), 32),
        )
        log.info("gmail watch " + ("renewed" if current else "created"), user_id=user_id)

    async def _gmail_stop(self, tokens: TokenSource) -> None:
        answer = await self._gmail_api(tokens).request("POST", "/stop", endpoint="stop")
        if answer.status_code not in (200, 204):
            raise api_error("gmail", "stop", answer)

    # --- Calendar ------------------------------------------------------------------------------
    def _calendar_api(self, tokens: TokenSource) -> ApiClient:
        return ApiClient(
            provider="calendar",
            http=self.http,
            tokens=tokens,
            base_url=self.settings.calendar_api_url,
            attempts=3,
            max_inline_wait=10.0,
        )

    async def _calendar_upkeep(self, user_id: str, tokens: TokenSource) -> None:
        now = self.clock.now()
        state = await self.states.load(user_id, "calendar")
        calendars = state.cursor.get("calendars")
        mirrored = set(calendars) if isinstance(calendars, Mapping) else set()
        channels = await self.store.of_user("calendar", user_id)
        margin = CALENDAR_RENEW_MARGIN + timedelta(seconds=self.settings.push_poll_interval)
        api = self._calendar_api(tokens)
        watched: set[str] = set()
        stale: list[ChannelView] = []
        for channel in channels:
            if (
                channel.resource not in mirrored
                or channel.resource in watched
                or not channel.healthy(now)
                or (channel.expiration is not None and channel.expiration - now < margin)
            ):
                stale.append(channel)
            else:
                watched.add(channel.resource)
        for calendar_id in sorted(mirrored - watched):
            await self._calendar_watch(api, user_id, calendar_id, now)
        for channel in stale:
            try:
                await self._calendar_stop(tokens, channel)
            except IngestionError as exc:
                log.warning(
                    "calendar channel not stopped; forgotten (it expires by itself)",
                    user_id=user_id,
                    error=str(exc)[:300],
                )
            await self.store.remove([channel.channel_id])

    async def _calendar_watch(
        self, api: ApiClient, user_id: str, calendar_id: str, now: datetime
    ) -> None:
        channel_id = str(uuid.uuid4())
        token = secrets.token_urlsafe(32)
        body = {
            "id": channel_id,
            "type": "web_hook",
            "address": f"{self.settings.public_base_url}{CALENDAR_PATH}",
            "token": token,
            "params": {"ttl": str(CALENDAR_TTL_SECONDS)},
        }
        # Saved first: Google sends the channel's `sync` message as soon as it exists, and the
        # route must know the channel by then. Until Google answers it counts as failing (a
        # crash here leaves a channel the next upkeep replaces); a failed watch forgets it.
        provisional = now + timedelta(seconds=CALENDAR_TTL_SECONDS)
        digest = token_digest(token)
        await self.store.save(
            channel_id=channel_id,
            provider="calendar",
            user_id=user_id,
            resource=calendar_id,
            token_sha256=digest,
            renewed_at=now,
            expiration=provisional,
            status="failing",
        )
        path = f"/calendars/{quote(calendar_id, safe='')}/events/watch"
        try:
            answer = await api.request("POST", path, endpoint="events.watch", json=body)
            if answer.status_code != 200:
                raise api_error("calendar", "events.watch", answer)
            channel = _json(answer)
        except BaseException:
            await self.store.remove([channel_id])
            raise
        await self.store.save(
            channel_id=channel_id,
            provider="calendar",
            user_id=user_id,
            resource=calendar_id,
            token_sha256=digest,
            renewed_at=now,
            resource_id=_bounded_text(channel.get("resourceId"), 512),
            expiration=_expiration(channel.get("expiration")) or provisional,
        )
        log.info("calendar channel created", user_id=user_id)

    async def _calendar_stop(self, tokens: TokenSource, channel: ChannelView) -> None:
        body = {"id": channel.channel_id, "resourceId": channel.resource_id}
        answer = await self._calendar_api(tokens).request(
            "POST", "/channels/stop", endpoint="channels.stop", json=body
        )
        # 404: the channel is already gone at Google's end (expired or stopped): nothing to do.
        if answer.status_code not in (200, 204, 404):
            raise api_error("calendar", "channels.stop", answer)


def _json(response: httpx.Response) -> Mapping[str, Any]:
    if len(response.content) > 64 * 1024:
        raise IngestionError("push: the answer is larger than 64 KB")
    try:
        value = response.json()
    except ValueError:
        raise IngestionError("push: the answer is not JSON") from None
    return value if isinstance(value, dict) else {}


def _bounded_text(value: Any, limit: int) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value
