"""The scheduler: on each provider's cron tick, one sync job per connected account.

Guarantees:

- Every registered provider runs on `settings.cron_for(name)`; a tick enqueues one job per user
  with a connected account of that provider, except accounts whose sync state is
  `reauth_required` and whose tokens have not changed since (a reconnect changes the account's
  fingerprint, and the user is scheduled again), and removed pairs (`ingestion.forget`).
- **A product-side disconnect is noticed here**: a pair with sync state whose account row is
  gone is recorded as disconnected (it stops; its records are purged `FORGET_AFTER_DISCONNECT`
  later by the forgetter of `run` / `worker`).
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
from ingestion.storage.accounts import find_account, fingerprint, list_accounts
from ingestion.storage.db import Database
from ingestion.storage.removals import Removals, disconnect_purge_time
from ingestion.storage.state import StateView, SyncStateStore

__all__ = ["Scheduler", "TickQueue", "TickReport", "serve_scheduler"]

log = structlog.get_logger("ingestion.scheduler")


class TickQueue(Protocol):
    async def enqueue_tick(self, job: Job, tick_epoch: int, due: float) -> str:
        """`enqueued`, `coalesced` or `duplicate` (another scheduler took this tick)."""
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
        self.states = SyncStateStore(db)
        self.removals = Removals(db)

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
        users = await self.due_users(provider)
        tick_epoch = int(tick.timestamp())
        jitter = self.settings.schedule_jitter_seconds
        outcomes: Counter[str] = Counter()
        for user_id in users:
            due = time.time() + random.uniform(0, jitter) if jitter > 0 else 0.0
            outcome = await self.queue.enqueue_tick(Job(provider, user_id), tick_epoch, due)
            outcomes[outcome] += 1
        report = TickReport(provider, tick, dict(outcomes))
        log.info(
            "schedule tick",
            provider=provider,
            tick=tick.isoformat(),
            users=len(users),
            enqueued=outcomes["enqueued"],
            coalesced=outcomes["coalesced"],
            duplicate=outcomes["duplicate"],
        )
        return report

    async def due_users(self, provider: str) -> list[str]:
        """Users with a connected account for `provider` who do not wait on a reconnect and
        did not remove the pair; records the pairs whose account the product deleted."""
        account_provider = account_provider_of(provider)
        states = {s.user_id: s for s in await self.states.all() if s.provider == provider}
        removed = {r.user_id for r in await self.removals.all() if r.provider == provider}
        # Push (ingestion.push): while a pair's push channels are healthy it is polled only
        # every PUSH_POLL_INTERVAL; an expired or failing channel puts it back on the cron.
        now = self.clock.now()
        stretch = timedelta(seconds=self.settings.push_poll_interval)
        pushed = await ChannelStore(self.db).statuses(now, [provider])
        users: list[str] = []
        async with self.db.session() as session:
            accounts = await list_accounts(session, account_provider)
        await self._record_disconnects(provider, states, {a.user_id for a in accounts}, removed)
        async with self.db.session() as session:
            for account in accounts:
                if account.user_id in users:
                    continue
                if account.user_id in removed and await self.removals.stopped(
                    account.user_id, provider, account.id
                ):
                    continue
                state = states.get(account.user_id)
                if (
                    pushed.get((account.user_id, provider)) == "active"
                    and state is not None
                    and state.last_sync_time is not None
                    and now - state.last_sync_time < stretch
                ):
                    continue
                if state is not None and state.status == "reauth_required":
                    current = await find_account(session, account.user_id, account_provider)
                    if current is None or fingerprint(current) == state.reauth_fingerprint:
                        continue
                users.append(account.user_id)
        return users

    async def _record_disconnects(
        self,
        provider: str,
        states: dict[str, StateView],
        connected: set[str],
        removed: set[str],
    ) -> None:
        now = self.clock.now()
        for user_id in sorted(set(states) - connected - removed):
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
