"""The scheduler: on each provider's cron tick, one sync job per connected account.

Guarantees:

- Every registered provider runs on `settings.cron_for(name)`; a tick enqueues one job per user
  with a connected account of that provider, except accounts whose sync state is
  `reauth_required` and whose tokens have not changed since (a reconnect changes the account's
  fingerprint, and the user is scheduled again), and removed pairs (`ingestion.forget`).
- **A product-side disconnect is noticed here**: a pair with sync state whose account row is
  gone is recorded as disconnected (it stops; its records are purged `FORGET_AFTER_DISCONNECT`
  later by the forgetter of `run` / `worker`).
- **Linear in the accounts, bounded in memory**: a tick walks the provider's accounts in keyset
  pages of `PAGE_SIZE` (user id order, joined to their sync state in SQL) and enqueues each
  page with one queue call (one Lua script on Redis); removed pairs and pairs whose push
  channels are healthy are left out of each page by sets read once per tick (both small:
  removals, and channels only where push is configured).
- **Exactly once per (provider, user, tick) across any number of schedulers**: the queue checks
  a key named after the scheduled tick time (not `now()`) and adds the job in one atomic step.
  A job for a pair that is still queued or running is coalesced.
- Jobs of one tick are spread over `SCHEDULE_JITTER_SECONDS`; they wait in the queue's delayed
  set, not in this process. A tick missed while the process was down is not replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from croniter import croniter

from ingestion import metrics
from ingestion.clock import Clock, SystemClock
from ingestion.config import Settings
from ingestion.errors import describe_unexpected
from ingestion.providers.registry import REGISTRY, account_provider_of
from ingestion.push.store import ChannelStore
from ingestion.queue.jobs import Job
from ingestion.storage.accounts import due_page, orphaned_pairs
from ingestion.storage.db import Database
from ingestion.storage.removals import Removals, disconnect_purge_time

__all__ = ["PAGE_SIZE", "Scheduler", "TickQueue", "TickReport", "serve_scheduler"]

log = structlog.get_logger("ingestion.scheduler")

#: Accounts read, and jobs enqueued in one queue call, per step of a tick.
PAGE_SIZE = 1000


class TickQueue(Protocol):
    async def enqueue_ticks(self, jobs: Sequence[tuple[Job, float]], tick_epoch: int) -> list[str]:
        """Per `(job, due)`: `enqueued`, `coalesced` or `duplicate` (another scheduler took
        this tick for the pair)."""
        ...


@dataclass(frozen=True)
class TickReport:
    provider: str
    tick: datetime
    outcomes: dict[str, int]


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        queue: TickQueue,
        db: Database,
        *,
        clock: Clock | None = None,
        providers: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.db = db
        self.clock = clock or SystemClock()
        self.providers = providers or list(REGISTRY)
        self.removals = Removals(db)
        self.page_size = PAGE_SIZE

    def next_tick(self, provider: str, after: datetime) -> datetime:
        result: datetime = croniter(self.settings.cron_for(provider), after).get_next(datetime)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Enqueue on every tick until `stop` is set."""
        now = self.clock.now()
        upcoming = {name: self.next_tick(name, now) for name in self.providers}
        log.info(
            "scheduler started",
            schedules={name: self.settings.cron_for(name) for name in self.providers},
        )
        while not stop.is_set():
            when = min(upcoming.values())
            wait = (when - self.clock.now()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                continue
            for name, tick in list(upcoming.items()):
                if tick <= self.clock.now():
                    await self._tick_with_retry(name, tick, stop)
                    upcoming[name] = self.next_tick(name, max(tick, self.clock.now()))
        log.info("scheduler stopped")

    async def _tick_with_retry(self, provider: str, tick: datetime, stop: asyncio.Event) -> None:
        """A tick that fails (queue or database unreachable) is retried until the next one."""
        deadline = self.next_tick(provider, tick)
        delay = 0.5
        while not stop.is_set():
            try:
                await self.enqueue_tick(provider, tick)
                return
            except Exception as exc:
                if self.clock.now() + timedelta(seconds=delay) >= deadline:
                    log.error(
                        "schedule tick skipped", provider=provider, error=describe_unexpected(exc)
                    )
                    return
                log.warning(
                    "schedule tick failed; retrying",
                    provider=provider,
                    error=describe_unexpected(exc),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)

    async def enqueue_tick(self, provider: str, tick: datetime) -> TickReport:
        """Enqueue the jobs of one tick; safe to call from several schedulers at once."""
        tick_epoch = int(tick.timestamp())
        jitter = self.settings.schedule_jitter_seconds
        outcomes: Counter[str] = Counter()
        users = 0
        async for page in self._due_pages(provider):
            now = time.time()
            jobs = [
                (Job(provider, user_id), now + random.uniform(0, jitter) if jitter > 0 else 0.0)
                for user_id in page
            ]
            outcomes.update(await self.queue.enqueue_ticks(jobs, tick_epoch))
            users += len(page)
        report = TickReport(provider, tick, dict(outcomes))
        log.info(
            "schedule tick",
            provider=provider,
            tick=tick.isoformat(),
            users=users,
            enqueued=outcomes["enqueued"],
            coalesced=outcomes["coalesced"],
            duplicate=outcomes["duplicate"],
        )
        return report

    async def due_users(self, provider: str) -> list[str]:
        """Users with a connected account for `provider` who do not wait on a reconnect, did
        not remove the pair and are not served by a healthy push channel; records the pairs
        whose account the product deleted."""
        return [user async for page in self._due_pages(provider) for user in page]

    async def _due_pages(self, provider: str) -> AsyncIterator[list[str]]:
        """The due users, one keyset page at a time (each page its own short transaction)."""
        account_provider = account_provider_of(provider)
        await self._record_disconnects(provider, account_provider)
        removed = {r.user_id for r in await self.removals.all() if r.provider == provider}
        # Push (ingestion.push): while a pair's push channels are healthy it is polled only
        # every PUSH_POLL_INTERVAL; an expired or failing channel puts it back on the cron.
        now = self.clock.now()
        stretch = timedelta(seconds=self.settings.push_poll_interval)
        pushed = await ChannelStore(self.db).statuses(now, [provider])
        after: str | None = None
        while True:
            async with self.db.session() as session:
                page, after = await due_page(
                    session, provider, account_provider, after, self.page_size
                )
            due: list[str] = []
            for account in page:
                if account.user_id in removed and await self.removals.stopped(
                    account.user_id, provider, account.account_id
                ):
                    continue
                if (
                    pushed.get((account.user_id, provider)) == "active"
                    and account.last_sync_time is not None
                    and now - account.last_sync_time < stretch
                ):
                    continue
                due.append(account.user_id)
            if due:
                yield due
            if after is None:
                return

    async def _record_disconnects(self, provider: str, account_provider: str) -> None:
        """Pairs with sync state whose account row the product deleted (one anti-join, not a
        read of every state) stop and are purged `FORGET_AFTER_DISCONNECT` later."""
        async with self.db.session() as session:
            gone = await orphaned_pairs(session, provider, account_provider)
        now = self.clock.now()
        for user_id in gone:
            purge_after = disconnect_purge_time(self.settings, now)
            if await self.removals.mark_disconnected(user_id, provider, now, purge_after):
                log.warning(
                    "account disconnected in the product; the pair stops",
                    provider=provider,
                    user_id=user_id,
                    purge_after=purge_after.isoformat() if purge_after else "never",
                )


async def serve_scheduler(settings: Settings) -> None:
    """`ingestion scheduler`: enqueue on the Redis queue until SIGINT/SIGTERM."""
    from ingestion.queue import redis_queue
    from ingestion.services import install_stop_signals, load_plugins
    from ingestion.storage.db import open_database

    metrics.check_multiprocess(settings)
    load_plugins(settings)
    queue = redis_queue(settings)
    stop = asyncio.Event()
    install_stop_signals(stop)
    db = await open_database(settings)
    try:
        await Scheduler(settings, queue, db).run(stop)
    finally:
        await db.dispose()
        await queue.aclose()
