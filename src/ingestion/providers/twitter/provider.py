"""The X provider: the user's own posts, mentions and likes, each on its own cursor.

One sync: resolve the user id once with `/users/me` (kept in the state), then walk the enabled
timelines (`TWITTER_TIMELINES`) in order, each with a fair share of the per-sync page budget
(`TWITTER_PAGE_BUDGET`; what one timeline leaves unused goes to the next). A budget that runs out
ends the sync normally with every pass's checkpoint stored; the next sync continues it. A rate
window about to run out (or a 429) raises `RateLimited` with the reset time: the job is
deferred, and the pages already yielded keep their cursor (see `sync.py`). The app's usage cap
(`UsageCapExceeded`) stops the whole sync with `QuotaExhausted`: the cursor records when the
cap resets, and until then a sync raises it again without a single call. Posts deleted and
likes taken back are found by a periodic re-read of the recent window (`reconcile.py`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ingestion.config import Settings
from ingestion.errors import QuotaExhausted, RateLimited
from ingestion.providers.base import SyncContext, SyncPage
from ingestion.providers.twitter import reconcile
from ingestion.providers.twitter.client import TwitterClient
from ingestion.providers.twitter.sync import (
    TIMELINES,
    Budget,
    TimelineWalk,
    TwitterCursor,
    walk_timeline,
)

__all__ = ["CAP_KEY", "TwitterProvider"]

#: Cursor key: when the spent usage cap resets (ISO-8601); no call is made before it.
CAP_KEY = "usageCapUntil"


def _cap_until(state: Mapping[str, Any]) -> datetime | None:
    raw = state.get(CAP_KEY)
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TwitterProvider:
    name: ClassVar[str] = "twitter"
    account_provider: ClassVar[str] = "twitter"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        enabled = {t.strip() for t in settings.twitter_timelines.split(",") if t.strip()}
        self.timelines = [t for t in TIMELINES if t in enabled]

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        cursor = TwitterCursor.of(ctx.state)
        until = _cap_until(ctx.state)
        now = ctx.clock.now()
        if until is not None and now < until:
            # The app's usage cap is spent: not one call until it resets.
            raise QuotaExhausted(
                f"twitter: the app's usage cap is spent; no calls until it resets at "
                f"{until.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                retry_after=(until - now).total_seconds(),
            )
        try:
            async for page in self._sync(ctx, cursor):
                yield page
        except QuotaExhausted as capped:
            reset = ctx.clock.now() + timedelta(seconds=capped.retry_after or 0.0)
            state = {**cursor.as_state(), CAP_KEY: reset.astimezone(UTC).isoformat()}
            yield SyncPage(state=state, stats={"usageCapped": 1})
            raise

    async def _sync(self, ctx: SyncContext, cursor: TwitterCursor) -> AsyncIterator[SyncPage]:
        client = TwitterClient(ctx, reserve=self.settings.twitter_rate_limit_reserve)
        if not cursor.user_id:
            me = await client.me()
            cursor.user_id = str(me["id"])
            cursor.username = me.get("username")
        sent = 0

        def requests_delta() -> int:
            nonlocal sent
            delta = client.requests - sent
            sent = client.requests
            return delta

        start = ctx.options.since or (ctx.clock.now() - timedelta(days=self.settings.backfill_days))
        walk_budget = Budget(pages=self.settings.twitter_page_budget, items=ctx.options.max_results)
        walk = TimelineWalk(
            client=client,
            cursor=cursor,
            user_id=ctx.user_id,
            backfill_start=start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            budget=walk_budget,
            requests_delta=requests_delta,
        )
        yielded = False
        exhausted: list[str] = []
        deferred: list[tuple[str, RateLimited]] = []
        for index, kind in enumerate(self.timelines):
            left = len(self.timelines) - index
            share = math.ceil(walk_budget.pages / left) if walk_budget.pages > 0 else 0
            walk.budget = Budget(pages=share, items=walk_budget.items)
            try:
                async for page in walk_timeline(walk, kind):
                    yielded = True
                    yield page
            except QuotaExhausted:
                raise  # the cap is the app's, across every endpoint
            except RateLimited as exc:
                # Each endpoint has its own window: the other timelines still run.
                deferred.append((kind, exc))
            used = share - walk.budget.pages
            walk_budget.pages -= used
            walk_budget.items = walk.budget.items
            if walk.budget.exhausted:
                exhausted.append(kind)
        if exhausted:
            ctx.log.info(
                "twitter page budget used up; the next sync continues",
                timelines=exhausted,
                budget=self.settings.twitter_page_budget,
            )
        if not exhausted and not deferred and ctx.options.max_results is None:
            async for page in self._reconcile(ctx, walk, walk_budget):
                yielded = True
                yield page
        if not yielded or exhausted:
            yield SyncPage(
                state=cursor.as_state(),
                stats={"requests": requests_delta(), "budgetExhausted": int(bool(exhausted))},
            )
        if deferred:
            waits = [exc.retry_after for _, exc in deferred if exc.retry_after is not None]
            raise RateLimited(
                "; ".join(str(exc) for _, exc in deferred),
                retry_after=max(waits) if waits else None,
            )

    async def _reconcile(
        self, ctx: SyncContext, walk: TimelineWalk, budget: Budget
    ) -> AsyncIterator[SyncPage]:
        """The re-read of the recent window, when due (`reconcile.py`); a first sync only
        starts its clock. A rate window running out ends the pass without sweeping."""
        if not reconcile.enabled(self.settings, self.timelines):
            return
        now = ctx.clock.now()
        if not walk.cursor.reconcile.get("at"):
            window = now - timedelta(days=self.settings.twitter_reconcile_days)
            reconcile.stamp(walk, now, window, None)
            yield SyncPage(state=walk.cursor.as_state())
            return
        if not reconcile.due(self.settings, walk, now):
            return
        walk.budget = Budget(pages=budget.pages)
        try:
            async for page in reconcile.reconcile_pass(walk, self.settings, now):
                yield page
        except RateLimited as exc:
            ctx.log.info("twitter reconcile pass stopped by a rate window", reason=str(exc))
        finally:
            budget.pages = walk.budget.pages
