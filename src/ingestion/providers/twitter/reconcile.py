"""Deletions no X cursor reports: posts the user deleted and likes taken back.

`since_id` walks only ever see new posts, so every `TWITTER_RECONCILE_HOURS` a sync re-reads the
recent window (the last `TWITTER_RECONCILE_DAYS`) of each timeline, asking only for ids, and the
engine deletes every record created inside the window that no timeline listed any more
(`Scope("", since=window start)`, the listed ids reported as `seen`). Records created before
the window are never touched.

- Posts and mentions: one pass with `start_time` = the window's start, every page. X serves
  only the newest 3,200 posts and 800 mentions: a window holding that many is not complete.
- Likes have no time parameter and come newest-liked first, and a liked post created inside the
  window was liked inside it. So the pass reads likes until it meets an *anchor* older than the
  window: anchors are (liked id, time it was seen at the top of the likes), one per pass, and
  every like below an anchor was made before the anchor's time. Without such an anchor (the
  first month) it reads to the end of the likes.
- The pass must finish inside the sync's page budget (what the incremental walks left) and
  rate windows; otherwise nothing is swept and the next sync tries again. It runs only when all
  three timelines are synced, since a post's record may come from any of them.

Cost of one pass: ceil(posts in window / 100) + ceil(mentions in window / 100) + ceil(likes
since the stop anchor / 100) requests, at least 3, every post read counting against X's
monthly read cap; with the default 24 hours between passes that is about 0.03 requests per
15-minute sync for a typical account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from ingestion.config import Settings
from ingestion.providers.base import Scope, SyncPage
from ingestion.providers.twitter.sync import TIMELINES, TimelineWalk

__all__ = ["REACHABLE", "due", "enabled", "reconcile_pass", "stamp"]

log = structlog.get_logger("ingestion.providers.twitter")

#: The newest posts X serves per timeline (user posts, mentions): a window holding more cannot
#: be listed whole.
REACHABLE = {"tweets": 3200, "mentions": 800}
#: Anchors kept besides those inside the window.
_ANCHORS_OUTSIDE = 1
_ANCHORS_MAX = 400


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _anchors(state: Mapping[str, Any]) -> list[tuple[str, datetime]]:
    out: list[tuple[str, datetime]] = []
    for raw in state.get("likeAnchors") or []:
        if isinstance(raw, list | tuple) and len(raw) == 2:
            when = _parse(raw[1])
            if when is not None and isinstance(raw[0], str) and raw[0].isdigit():
                out.append((raw[0], when))
    return out


def enabled(settings: Settings, timelines: list[str]) -> bool:
    return settings.twitter_reconcile_days > 0 and set(timelines) == set(TIMELINES)


def due(settings: Settings, walk: TimelineWalk, now: datetime) -> bool:
    """A pass is due when the last one (or the first sync) is `TWITTER_RECONCILE_HOURS` old."""
    last = _parse(walk.cursor.reconcile.get("at"))
    return last is not None and now - last >= timedelta(hours=settings.twitter_reconcile_hours)


def stamp(walk: TimelineWalk, now: datetime, window_start: datetime, top: str | None) -> None:
    """Record `now` as the last pass (or the start of the clock on a first sync) and `top`, the
    newest like (None = the newest the likes walk knows), as an anchor; anchors older than the
    window are pruned to the newest one."""
    state = walk.cursor.reconcile
    anchors = _anchors(state)
    known = walk.cursor.timelines["likes"].known_ids
    newest = top or (known[0] if known else None)
    if newest:
        anchors.insert(0, (newest, now))
    inside = [a for a in anchors if a[1] >= window_start][:_ANCHORS_MAX]
    outside = [a for a in anchors if a[1] < window_start][:_ANCHORS_OUTSIDE]
    state["at"] = _iso(now)
    state["likeAnchors"] = [[i, _iso(t)] for i, t in [*inside, *outside]]


async def reconcile_pass(
    walk: TimelineWalk, settings: Settings, now: datetime
) -> AsyncIterator[SyncPage]:
    """Re-read the window of every timeline; the last page completes the enumeration when the
    whole window was read (see the module docstring). Raises `RateLimited` like the walks."""
    start = now - timedelta(days=settings.twitter_reconcile_days)
    account = walk.cursor.user_id or ""
    first = True
    requests = 0

    def page(ids: list[str], *, done: bool = False) -> SyncPage:
        nonlocal first, requests
        sent = walk.requests_delta()
        requests += sent
        result = SyncPage(
            state=walk.cursor.as_state(),
            seen=ids,
            stats={"requests": sent, "reconcileRequests": sent},
            enumeration_started=[Scope("", since=start)] if first else [],
            enumeration_completed=[""] if done else [],
        )
        first = False
        return result

    for kind in ("tweets", "mentions"):
        listed = 0
        token: str | None = None
        while True:
            if not walk.budget.take_page():
                return
            params = {"start_time": _iso(start)}
            if token:
                params["pagination_token"] = token
            answer = await walk.client.timeline_ids(kind, account, params)
            ids = [str(p["id"]) for p in answer.data if str(p.get("id", "")).isdigit()]
            listed += len(ids)
            yield page(ids)
            token = answer.next_token
            if not token:
                break
        if listed >= REACHABLE[kind]:
            log.info(
                "more posts in the reconcile window than X serves; nothing swept",
                timeline=kind,
                user_id=walk.user_id,
            )
            return
    stops = {i for i, t in _anchors(walk.cursor.reconcile) if t < start}
    token = None
    top: str | None = None
    while True:
        if not walk.budget.take_page():
            return
        answer = await walk.client.timeline_ids(
            "likes", account, {"pagination_token": token} if token else {}
        )
        ids = [str(p["id"]) for p in answer.data if str(p.get("id", "")).isdigit()]
        top = top or (ids[0] if ids else None)
        yield page(ids)
        token = answer.next_token
        if not token or stops.intersection(ids):
            break
    stamp(walk, now, start, top)
    yield page([], done=True)
    log.info("twitter reconcile pass complete", user_id=walk.user_id, requests=requests)
