"""The sync engine: one sync of one (user, provider), from token to committed cursor.

For each page the provider yields, in this order: deletes and upserts go to the memory sink,
and only when the sink accepted them is the page's cursor stored (`SyncStateStore.checkpoint`).
A failure at any point leaves the cursor at the last accepted page, so the next attempt resumes
there; stable record ids make the overlap harmless. Jobs may therefore run more than once.

Between the sink and the cursor, the page's deliveries are remembered, and a completed full
enumeration (or a scope gone) deletes the remembered records it no longer has
(`ingestion.reconcile`); the reconciliation state is stored with the cursor. A page that sweeps
nothing stores its deliveries and its cursor in one transaction.

A removed pair (`ingestion.forget`) does not sync: a job for it ends at once, and a running one
before its next page reaches the sink, with status `removed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from ingestion import metrics
from ingestion.clock import Clock
from ingestion.config import Settings
from ingestion.errors import (
    IngestionError,
    PermanentError,
    QuotaExhausted,
    RateLimited,
    ReauthRequired,
    describe_unexpected,
    safe_traceback,
)
from ingestion.memory.base import MemorySink
from ingestion.memory.record import record_id
from ingestion.providers.base import FetchOptions, SyncContext, SyncPage
from ingestion.providers.items import ItemGuard
from ingestion.providers.registry import create_provider
from ingestion.reconcile import DeliveredRecords, Reconciliation
from ingestion.storage.accounts import find_account, fingerprint
from ingestion.storage.db import Database
from ingestion.storage.removals import Removals, disconnect_purge_time
from ingestion.storage.state import SyncStateStore
from ingestion.tokens import TokenService

__all__ = ["AfterSyncHook", "SyncEngine", "SyncLockFactory", "SyncSummary"]

log = structlog.get_logger("ingestion.sync")

SyncLockFactory = Callable[[str, str], AbstractAsyncContextManager[None]]
#: Called with (provider, user_id) after a sync committed; must not raise (push channel upkeep).
AfterSyncHook = Callable[[str, str], Awaitable[None]]
ProgressFn = Callable[["SyncSummary", SyncPage], None]


@asynccontextmanager
async def _no_lock(_provider: str, _user_id: str) -> AsyncIterator[None]:
    yield


@dataclass
class SyncSummary:
    provider: str
    user_id: str
    status: str = "running"
    fetched: int = 0
    upserted: int = 0
    deleted: int = 0
    pages: int = 0
    seconds: float = 0.0
    error: str | None = None
    retry_after: float | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class SyncEngine:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        sink: MemorySink,
        tokens: TokenService,
        http: httpx.AsyncClient,
        clock: Clock,
        lock: SyncLockFactory | None = None,
        after_sync: AfterSyncHook | None = None,
    ) -> None:
        self.settings = settings
        self.after_sync = after_sync
        self.db = db
        self.sink = sink
        self.tokens = tokens
        self.http = http
        self.clock = clock
        self.lock = lock or _no_lock
        self.state = SyncStateStore(
            db,
            keep_runs=settings.sync_runs_keep,
            max_run_age=timedelta(days=settings.sync_runs_max_age_days),
        )
        self.removals = Removals(db)

    async def run(
        self,
        provider_name: str,
        user_id: str,
        options: FetchOptions | None = None,
        *,
        job_id: str | None = None,
        progress: ProgressFn | None = None,
    ) -> SyncSummary:
        """Run one sync to completion; raises the `IngestionError` that stopped it.

        The summary's counts are those of this run; on failure the error is re-raised after
        the state row and the run history say what happened.
        """
        options = options or FetchOptions()
        provider = create_provider(provider_name, self.settings)
        summary = SyncSummary(provider=provider_name, user_id=user_id)
        started = time.perf_counter()
        bound = log.bind(provider=provider_name, user_id=user_id, job_id=job_id)
        async with self.lock(provider_name, user_id):
            account_print, account_ref = await self._account(user_id, provider.account_provider)
            if await self.removals.stopped(user_id, provider_name, account_ref):
                # Removed (`accounts remove`, `users forget`) or disconnected in the product:
                # the job ends without writing anything.
                summary.status = "removed"
                bound.info("sync skipped: the pair was removed")
                return summary
            if account_print is None and await self._disconnected(user_id, provider_name):
                summary.status = "removed"
                bound.warning("sync skipped: the account was disconnected in the product")
                return summary
            if account_print is None:
                raise PermanentError(
                    f"user {user_id!r} has no connected {provider.account_provider} account "
                    f"(add one with `ingestion accounts add` or `ingestion connect`)"
                )
            state = await self.state.load(user_id, provider_name)
            reconciliation = Reconciliation.of(state.reconcile)
            delivered = DeliveredRecords(self.db, self.sink, user_id, provider_name)
            run_id = await self.state.begin(user_id, provider_name, job_id)
            metrics.JOBS.labels(provider=provider_name, outcome="started").inc()
            ctx = SyncContext(
                user_id=user_id,
                options=options,
                state={} if options.force_full_sync else dict(state.cursor),
                last_sync_time=state.last_sync_time,
                settings=self.settings,
                http=self.http,
                tokens=self.tokens.source(user_id, provider.account_provider),
                clock=self.clock,
                log=bound,
                items=ItemGuard(provider_name, bound, self.settings.transform_time_budget),
            )
            bound.info("sync started", full=options.force_full_sync or not state.cursor)
            try:
                # Closed as soon as the sync ends, whatever ends it: a provider reading ahead
                # (Gmail fetches the next page while this one is accepted) stops at once.
                async with _closing(provider.sync(ctx)) as pages:
                    async for page in pages:
                        if await self.removals.stopped(user_id, provider_name, None, lift=False):
                            raise _Removed
                        await self._accept(
                            provider_name,
                            user_id,
                            run_id,
                            page,
                            summary,
                            options,
                            delivered,
                            reconciliation,
                            ctx.items,
                        )
                        if progress is not None:
                            progress(summary, page)
            except _Removed:
                summary.status = "removed"
                summary.seconds = time.perf_counter() - started
                await self.state.finish(
                    user_id, provider_name, run_id, "removed", details=summary.stats
                )
                bound.info("sync stopped: the pair was removed", **_counts(summary))
                return summary
            except IngestionError as exc:
                summary.seconds = time.perf_counter() - started
                summary.error = str(exc)
                if isinstance(exc, QuotaExhausted):
                    summary.status = "quota_exhausted"
                    summary.retry_after = exc.retry_after
                    metrics.QUOTA_EXHAUSTED.labels(provider=provider_name).inc()
                elif isinstance(exc, RateLimited):
                    summary.status = "deferred"
                    summary.retry_after = exc.retry_after
                elif isinstance(exc, ReauthRequired):
                    summary.status = "reauth_required"
                    # The tokens that failed, not those at the start: a refresh may have
                    # succeeded mid-sync before a later one hit the dead grant.
                    account_print, _ = await self._account(user_id, provider.account_provider)
                else:
                    summary.status = "error"
                await self.state.finish(
                    user_id,
                    provider_name,
                    run_id,
                    summary.status,
                    error=str(exc),
                    details=summary.stats,
                    fingerprint=account_print,
                )
                metrics.SYNC_DURATION.labels(provider=provider_name, status=summary.status).observe(
                    summary.seconds
                )
                bound.warning(
                    "sync stopped", status=summary.status, error=str(exc), **_counts(summary)
                )
                raise
            except asyncio.CancelledError:
                # Shutdown past its grace period: the job stays pending and runs again.
                summary.status = "cancelled"
                summary.seconds = time.perf_counter() - started
                await self.state.finish(
                    user_id, provider_name, run_id, "cancelled", details=summary.stats
                )
                bound.warning("sync cancelled", **_counts(summary))
                raise
            except Exception as exc:
                summary.status = "error"
                summary.seconds = time.perf_counter() - started
                # Never the exception's text: a sink or database error can quote record content
                # or a row's values (tokens); the class names what failed, the trace where.
                message = describe_unexpected(exc)
                await self.state.finish(
                    user_id, provider_name, run_id, "error", error=message, details=summary.stats
                )
                metrics.SYNC_DURATION.labels(provider=provider_name, status="error").observe(
                    summary.seconds
                )
                bound.error("sync crashed", error=message, trace=safe_traceback(exc))
                raise
            summary.status = "ok"
            summary.seconds = time.perf_counter() - started
            await self.state.finish(user_id, provider_name, run_id, "ok", details=summary.stats)
            metrics.SYNC_DURATION.labels(provider=provider_name, status="ok").observe(
                summary.seconds
            )
            bound.info("sync finished", seconds=round(summary.seconds, 3), **_counts(summary))
            if self.after_sync is not None:
                await self.after_sync(provider_name, user_id)
            return summary

    async def _disconnected(self, user_id: str, provider_name: str) -> bool:
        """A pair that synced before and whose account row is gone was disconnected in the
        product: recorded as such (as the scheduler's next tick would), so its job ends
        quietly instead of failing."""
        if (await self.state.load(user_id, provider_name)).updated_at is None:
            return False
        now = self.clock.now()
        await self.removals.mark_disconnected(
            user_id, provider_name, now, disconnect_purge_time(self.settings, now)
        )
        return True

    async def _account(self, user_id: str, account_provider: str) -> tuple[str | None, str | None]:
        """The fingerprint of the account's tokens and the account row's id (None, None when
        the user has no such account)."""
        async with self.db.session() as session:
            account = await find_account(session, user_id, account_provider)
            return (fingerprint(account), account.id) if account else (None, None)

    async def _accept(
        self,
        provider_name: str,
        user_id: str,
        run_id: int,
        page: SyncPage,
        summary: SyncSummary,
        options: FetchOptions,
        delivered: DeliveredRecords,
        reconciliation: Reconciliation,
        items: ItemGuard,
    ) -> None:
        """Sink first, then what was delivered and the sweeps, cursor last: the order every
        guarantee rests on."""
        delete_ids = [record_id(provider_name, user_id, sid) for sid in page.deletes]
        if delete_ids:
            await self.sink.delete(user_id, delete_ids)
        sent = 0
        if page.upserts:
            sent = await self.sink.upsert(user_id, page.upserts, force=options.force_full_sync)
        for scope in page.enumeration_started:
            reconciliation.start(scope)
        swept = 0
        last_item = page.upserts[-1].source_id if page.upserts else None

        async def checkpoint(connection: AsyncConnection | None = None) -> None:
            await self.state.checkpoint(
                user_id,
                provider_name,
                run_id,
                page.state,
                fetched=page.fetched,
                upserted=len(page.upserts),
                deleted=len(delete_ids) + swept,
                last_item_id=last_item,
                reconcile=reconciliation.to_json(),
                connection=connection,
            )

        if not page.scopes_gone and not page.enumeration_completed:
            # Nothing to sweep: what was delivered and the cursor commit together.
            async with self.db.engine.begin() as connection:
                await delivered.remember(
                    page.upserts, page.deletes, reconciliation, page.seen, connection=connection
                )
                await checkpoint(connection)
        else:
            # The sweeps read what was delivered (this page included) and delete from the
            # sink before the cursor moves: three steps, in this order.
            await delivered.remember(page.upserts, page.deletes, reconciliation, page.seen)
            for prefix in page.scopes_gone:
                reconciliation.abandon_under(prefix)
                swept += await delivered.sweep_gone(prefix)
            for prefix in page.enumeration_completed:
                finished = reconciliation.finish(prefix)
                if finished is None:
                    log.info(
                        "enumeration completed without a start; nothing swept",
                        provider=provider_name,
                        user_id=user_id,
                        prefix=prefix,
                    )
                    continue
                swept += await delivered.sweep_unseen(finished)
            if swept:
                summary.stats["swept"] = summary.stats.get("swept", 0) + swept
                log.info("records swept", provider=provider_name, user_id=user_id, swept=swept)
            await checkpoint()
        summary.pages += 1
        summary.fetched += page.fetched
        summary.upserted += len(page.upserts)
        summary.deleted += len(delete_ids) + swept
        for key, value in [*page.stats.items(), *items.take_counts().items()]:
            summary.stats[key] = summary.stats.get(key, 0) + value
        metrics.ITEMS.labels(provider=provider_name, action="fetched").inc(page.fetched)
        metrics.ITEMS.labels(provider=provider_name, action="upserted").inc(sent)
        metrics.ITEMS.labels(provider=provider_name, action="unchanged").inc(
            len(page.upserts) - sent
        )
        metrics.ITEMS.labels(provider=provider_name, action="deleted").inc(len(delete_ids) + swept)


@asynccontextmanager
async def _closing(pages: AsyncIterator[SyncPage]) -> AsyncIterator[AsyncIterator[SyncPage]]:
    """The provider's pages, closed on the way out (an async generator's `aclose`)."""
    try:
        yield pages
    finally:
        close = getattr(pages, "aclose", None)
        if close is not None:
            await close()


class _Removed(Exception):
    """The pair was removed while its sync ran: stop before the next page is written."""


def _counts(summary: SyncSummary) -> dict[str, int]:
    return {
        "fetched": summary.fetched,
        "upserted": summary.upserted,
        "deleted": summary.deleted,
        "pages": summary.pages,
    }
