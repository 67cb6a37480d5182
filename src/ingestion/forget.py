"""Forgetting: a (user, provider) the user removed, or whose account the product deleted.

What is promised:

- **The pair stops at once.** A removal is a row in `ingestion_removals`, written before
  anything else. The sync engine reads it when a job starts and before every page goes to the
  memory sink: a queued job ends without writing, a running one ends at its next page
  (`Removals.stopped`); the scheduler skips the pair. `accounts add` / `connect`, or the
  product linking the account again (a new account row), lift a settled removal; a
  product-side disconnect is lifted as soon as the account is back.
- **The service's own state goes**: once the pair's sync lock is free (a running job gave it
  back at its next page), the cursor row is deleted. Without purge the delivered list is kept:
  it is what lets a later `--purge` or `users forget` erase those records.
- **Purge** deletes every record delivered for the pair from the memory sink, in batches, sink
  first and delivered list second (`DeliveredRecords.sweep_gone`), with the sink's retries. A
  purge interrupted by a crash leaves its removal unsettled; the next `accounts remove`,
  `users forget`, or the periodic `Forgetter.run` of `run` / `worker` finishes it.
- **Gmail and Calendar share the Google account**: removing one touches only its own records
  and state. The Better Auth `account` row is the product's and is deleted only on request
  (`delete_account`), and only when no other provider still syncs with it.
- **A product-side disconnect** (the account row is gone) is noticed at the next schedule tick:
  the pair stops, stays visible in `status`, and its records are purged
  `FORGET_AFTER_DISCONNECT` later (never with `never`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, func, select

from ingestion import metrics
from ingestion.clock import Clock, SystemClock
from ingestion.config import Settings
from ingestion.errors import PermanentError, RateLimited, describe
from ingestion.memory.base import MemorySink
from ingestion.providers.registry import REGISTRY, account_provider_of
from ingestion.push.channels import PushChannels
from ingestion.reconcile import DeliveredRecords
from ingestion.storage.accounts import find_account
from ingestion.storage.db import Database
from ingestion.storage.models import (
    Account,
    DeliveredRow,
    RemovalRow,
    SentHash,
    SyncRun,
    SyncStateRow,
)
from ingestion.storage.removals import Removals
from ingestion.sync import SyncLockFactory

__all__ = ["Forgetter", "RemovalReport", "UserForgotten"]

if TYPE_CHECKING:  # services builds the engine this module runs beside
    from ingestion.services import Services

log = structlog.get_logger("ingestion.forget")

#: Seconds a removal waits for a running job of the pair to give its lock back.
LOCK_WAIT = 60.0


@dataclass
class RemovalReport:
    """What one removal did: `purged` records deleted from the memory engine now, `kept`
    delivered records left there (no purge, or purge not due yet), `pending` when a running
    job still held the pair (the removal finishes in the background)."""

    provider: str
    user_id: str
    reason: str
    purge: bool
    purged: int = 0
    kept: int = 0
    state_removed: bool = False
    account_deleted: bool = False
    pending: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "userId": self.user_id,
            "reason": self.reason,
            "purge": self.purge,
            "purged": self.purged,
            "kept": self.kept,
            "stateRemoved": self.state_removed,
            "accountDeleted": self.account_deleted,
            "pending": self.pending,
        }


@dataclass
class UserForgotten:
    user_id: str
    providers: list[RemovalReport] = field(default_factory=list)
    runs: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "deleted": sum(r.purged for r in self.providers),
            "runs": self.runs,
            "pending": any(r.pending for r in self.providers),
            "providers": {r.provider: r.as_json() for r in self.providers},
        }


class Forgetter:
    """Removes pairs, forgets users, and finishes what an interrupted or deferred removal left."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        sink: MemorySink,
        *,
        lock: SyncLockFactory | None = None,
        clock: Clock | None = None,
        lock_wait: float = LOCK_WAIT,
        push: PushChannels | None = None,
    ) -> None:
        self.settings = settings
        #: Stops the pair's push channels (Gmail watch, Calendar channels) while the account's
        #: tokens are still there to do it.
        self.push = push
        self.db = db
        self.sink = sink
        self.lock = lock
        self.clock = clock or SystemClock()
        self.lock_wait = lock_wait
        self.removals = Removals(db)

    @classmethod
    def of(cls, services: Services) -> Forgetter:
        """The forgetter of a process: its database, sink, sync lock, clock and push channels."""
        return cls(
            services.settings,
            services.db,
            services.sink,
            lock=services.engine.lock,
            clock=services.clock,
            push=services.push,
        )

    # --- requests -------------------------------------------------------------------------
    async def remove(
        self,
        provider: str,
        user_id: str,
        *,
        purge: bool,
        delete_account: bool = False,
        reason: str = "removed",
    ) -> RemovalReport:
        """Stop the pair, drop its state and, with `purge`, its records; idempotent."""
        account_provider = account_provider_of(provider)
        if delete_account:
            await self._check_account_unshared(provider, user_id, account_provider)
        now = self.clock.now()
        async with self.db.session() as session:
            account = await find_account(session, user_id, account_provider)
            account_ref = account.id if account else None
        await self.removals.mark(
            user_id,
            provider,
            reason=reason,
            now=now,
            purge_after=now if purge else None,
            account_ref=account_ref,
        )
        log.info("pair removed", provider=provider, user_id=user_id, purge=purge, reason=reason)
        report = RemovalReport(provider, user_id, reason, purge)
        if self.push is not None:
            await self.push.stop(user_id, provider)
        if delete_account:
            async with self.db.session() as session:
                deleted = await session.execute(
                    delete(Account).where(
                        Account.user_id == user_id, Account.provider_id == account_provider
                    )
                )
                report.account_deleted = bool(getattr(deleted, "rowcount", 0))
        await self._settle(provider, user_id, report)
        return report

    async def forget_user(self, user_id: str) -> UserForgotten:
        """Every provider of the user removed with purge, and the user's sync history."""
        result = UserForgotten(user_id)
        for provider in sorted(REGISTRY):
            if await self._knows(provider, user_id):
                result.providers.append(
                    await self.remove(provider, user_id, purge=True, reason="forgotten")
                )
        async with self.db.session() as session:
            runs = await session.execute(delete(SyncRun).where(SyncRun.user_id == user_id))
            result.runs = int(getattr(runs, "rowcount", 0) or 0)
            await session.execute(delete(SentHash).where(SentHash.user_id == user_id))
        log.info("user forgotten", user_id=user_id, **_totals(result))
        return result

    async def finish_pending(self) -> list[RemovalReport]:
        """Settle every removal with work left: purges a crash interrupted, removals whose job
        held the lock, disconnects whose grace period is over."""
        reports: list[RemovalReport] = []
        for removal in await self.removals.unsettled(self.clock.now()):
            report = RemovalReport(
                removal.provider,
                removal.user_id,
                removal.reason,
                purge=removal.purge_after is not None,
            )
            await self._settle(removal.provider, removal.user_id, report)
            reports.append(report)
        return reports

    async def run(self, stop: asyncio.Event) -> None:
        """`run` / `worker`: finish pending removals every `FORGET_INTERVAL_SECONDS`."""
        while not stop.is_set():
            try:
                for report in await self.finish_pending():
                    log.info("pending removal finished", **report.as_json())
            except Exception as exc:  # the next round retries; the removal stays unsettled
                log.warning(
                    "pending removals not finished",
                    error=describe(exc),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.forget_interval_seconds)

    # --- the work -------------------------------------------------------------------------
    async def _settle(self, provider: str, user_id: str, report: RemovalReport) -> None:
        """Under the pair's sync lock: purge when due, drop the state, mark settled."""
        try:
            async with self._locked(provider, user_id):
                removal = await self.removals.get(user_id, provider)
                if removal is None:  # lifted meanwhile by a reconnect
                    return
                now = self.clock.now()
                if removal.purge_after is not None and removal.purge_after > now:
                    report.kept = await self._delivered_count(provider, user_id)
                    return  # a disconnect in its grace period: state kept, visible in status
                if removal.purge_after is not None:
                    report.purged = await self._purge(provider, user_id)
                else:
                    report.kept = await self._delivered_count(provider, user_id)
                async with self.db.session() as session:
                    gone = await session.execute(
                        delete(SyncStateRow).where(
                            SyncStateRow.user_id == user_id, SyncStateRow.provider == provider
                        )
                    )
                    report.state_removed = bool(getattr(gone, "rowcount", 0))
                await self.removals.settled(user_id, provider, now, 0)
        except _StillRunning:
            report.pending = True
            log.warning(
                "a running job still holds the pair; the removal finishes in the background",
                provider=provider,
                user_id=user_id,
            )

    async def _purge(self, provider: str, user_id: str) -> int:
        """Delete every delivered record of the pair from the sink, then forget it; the count
        is added to the removal batch by batch, so an interrupted purge keeps its tally."""
        delivered = DeliveredRecords(self.db, self.sink, user_id, provider)
        total = 0
        while True:
            swept = await delivered.sweep_gone("", batches=1)
            if not swept:
                break
            total += swept
            await self.removals.add_purged(user_id, provider, swept)
            metrics.ITEMS.labels(provider=provider, action="deleted").inc(swept)
        if total:
            log.info("records purged", provider=provider, user_id=user_id, purged=total)
        return total

    @asynccontextmanager
    async def _locked(self, provider: str, user_id: str) -> AsyncIterator[None]:
        """The pair's sync lock, waited for (a running job gives it back at its next page)."""
        if self.lock is None:
            yield
            return
        deadline = time.monotonic() + self.lock_wait
        while True:
            holder = self.lock(provider, user_id)
            try:
                await holder.__aenter__()
            except RateLimited:  # SyncBusy: a job of the pair is still running
                if time.monotonic() >= deadline:
                    raise _StillRunning from None
                await asyncio.sleep(0.2)
                continue
            break
        try:
            yield
        except BaseException as exc:
            if not await holder.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await holder.__aexit__(None, None, None)

    async def _knows(self, provider: str, user_id: str) -> bool:
        """Whether the service has anything for the pair: account, state, records, removal."""
        async with self.db.session() as session:
            if await session.get(SyncStateRow, (user_id, provider)) is not None:
                return True
            if await session.get(RemovalRow, (user_id, provider)) is not None:
                return True
            if await find_account(session, user_id, account_provider_of(provider)) is not None:
                return True
            found = await session.execute(
                select(DeliveredRow.source_id)
                .where(DeliveredRow.user_id == user_id, DeliveredRow.provider == provider)
                .limit(1)
            )
            return found.first() is not None

    async def _delivered_count(self, provider: str, user_id: str) -> int:
        async with self.db.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(DeliveredRow)
                .where(DeliveredRow.user_id == user_id, DeliveredRow.provider == provider)
            )
            return int(count or 0)

    async def _check_account_unshared(
        self, provider: str, user_id: str, account_provider: str
    ) -> None:
        for other in sorted(REGISTRY):
            if other == provider or account_provider_of(other) != account_provider:
                continue
            removal = await self.removals.get(user_id, other)
            if removal is None:
                raise PermanentError(
                    f"the {account_provider} account also serves {other}: remove {other} first "
                    f"(or remove {provider} without --delete-account)"
                )


class _StillRunning(Exception):
    """The pair's lock stayed busy for `lock_wait` seconds."""


def _totals(result: UserForgotten) -> dict[str, int]:
    return {"deleted": sum(r.purged for r in result.providers), "runs": result.runs}
