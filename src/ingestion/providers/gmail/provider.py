"""Gmail: a resumable backfill, then incremental syncs from the mailbox history.

What a sync promises (the engine stores each page's state only after the sink accepted it):

- **First or forced sync**: the profile's `historyId` is read first and kept in the state, then
  messages are listed newest first (`q` = `after:` the backfill window or `since`, without Spam
  and Trash), fetched through the batch endpoint, and sent one list page per
  `SyncPage`. Each page's state holds the next page token and the count, so a crash or SIGKILL
  resumes at the page after the last accepted one; `maxResults` caps the backfill. After the
  last page the state turns incremental at the recorded `historyId`, so changes made during
  the backfill are replayed by the next sync.
- **Incremental sync**: every `history.list` page from `historyId`. Added messages are fetched
  and upserted; deleted ones, and ones that gained TRASH or SPAM, are deleted; ones that left
  Trash or Spam are ingested again; any other label change re-fetches the message so its
  labels are current. A message that is gone when fetched (404) is deleted. With no change the
  sync makes exactly one request and upserts nothing.
- A 404 on a stale `historyId` starts a full resync by itself (stable ids: no duplicates).
- A fresh, uncapped backfill (first sync, forced full sync, history expired) is a full
  enumeration of the mailbox within its `after:` window: its first page declares it and its last
  page completes it, so messages deleted while history was expired are deleted then. Messages
  older than the window are never swept. A backfill capped by `maxResults` declares nothing.
- Pages are read ahead of the sink (`_read_ahead`): while the engine hands page N to the
  sink and stores its cursor, pages N+1 to N+3 are listed, fetched and transformed, two of them
  at once (`_in_order`: one page's batches are in flight while another's messages are
  transformed); they come out in order and only when asked for, so the cursor order above is
  unchanged. At most three pages are held besides the one in the sink.
- Each message is transformed off the event loop within its time budget (`SyncContext.items`).
  One whose body cannot be read is stored from its headers and snippet; a malformed one is
  ingested as well as possible; both are logged and counted `defective` (`skipped` when not even
  the headers could be read). A 403 other than a rate limit (a missing
  scope) fails the sync with Google's message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from ingestion.config import Settings
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import Scope, SyncContext, SyncPage
from ingestion.providers.gmail.bodies import fill_external_bodies
from ingestion.providers.gmail.client import (
    GmailApi,
    HistoryExpired,
    PageTokenRejected,
    Unreadable,
)
from ingestion.providers.gmail.sync import BACKFILL, INCREMENTAL, Backfill, GmailCursor
from ingestion.providers.gmail.transform import transform

__all__ = ["HIDDEN_LABELS", "MAILBOX", "GmailProvider"]

#: The reconciliation scope of a backfill: every message (within the window's time bound).
MAILBOX = ""

#: Messages with one of these labels are not mirrored (and are deleted when they gain one).
HIDDEN_LABELS = frozenset({"SPAM", "TRASH"})

_GONE = "gone"  # messagesDeleted: final
_HIDE = "hide"  # moved to Trash or Spam
_FETCH = "fetch"  # added, restored or relabelled: fetch the current message


class GmailProvider:
    name: ClassVar[str] = "gmail"
    account_provider: ClassVar[str] = "google"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        api = GmailApi(
            http=ctx.http,
            tokens=ctx.tokens,
            base_url=self.settings.gmail_api_url,
            quota_units_per_minute=self.settings.gmail_quota_units_per_minute,
            concurrency=self.settings.gmail_fetch_concurrency,
            batch_size=self.settings.gmail_batch_size,
        )
        cursor = GmailCursor.parse(ctx.state)
        if cursor is not None and cursor.mode == INCREMENTAL:
            try:
                reader = _read_ahead(self._incremental(api, ctx, cursor.history_id))
                async with aclosing(reader) as pages:
                    async for page in pages:
                        yield page
                return
            except HistoryExpired:
                ctx.log.info("gmail history expired, starting a full resync")
                cursor = None
        fresh: Scope | None = None
        if cursor is None:
            cursor, after = await self._start_backfill(api, ctx)
            if ctx.options.max_results is None:
                fresh = Scope(MAILBOX, since=after)
        async with aclosing(_read_ahead(self._backfill(api, ctx, cursor, fresh))) as pages:
            async for page in pages:
                yield page

    # --- backfill ------------------------------------------------------------------------------

    async def _start_backfill(
        self, api: GmailApi, ctx: SyncContext
    ) -> tuple[GmailCursor, datetime]:
        """The cursor of a new backfill, and the time its listing starts after."""
        profile = await api.profile()
        try:
            after = ctx.clock.now() - timedelta(days=self.settings.backfill_days)
        except OverflowError:  # a window reaching before year 1
            after = datetime.min.replace(tzinfo=UTC)
        since = ctx.options.since
        if since is not None and since > after:
            after = since
        # Gmail's `after:` takes epoch seconds: a window starting before 1970 has no lower bound
        # (a negative number would be read as a search word and match nothing).
        epoch = int(after.timestamp())
        bound = f"after:{epoch} " if epoch > 0 else ""
        query = f"{bound}-in:spam -in:trash"
        ctx.log.info("gmail backfill starting", history_id=profile.get("historyId"), query=query)
        cursor = GmailCursor(
            BACKFILL,
            str(profile["historyId"]),
            Backfill(query=query, limit=ctx.options.max_results),
        )
        return cursor, after

    async def _backfill(
        self, api: GmailApi, ctx: SyncContext, cursor: GmailCursor, fresh: Scope | None
    ) -> AsyncGenerator[SyncPage, None]:
        """The backfill's pages; `fresh` is the scope of a new uncapped backfill, declared
        with its first page (a resumed one is already declared).

        Pages are fetched and transformed `FETCH_AHEAD` at a time (`_in_order`): the next page
        is listed and its batches are in flight while this one's messages are transformed.
        They come out in listing order, each with the cursor that resumes after it."""
        pages_of = _PageBuilder(api, 0, 0)  # this sync's first page also counts the profile request
        listings = self._listings(api, ctx, cursor, fresh)
        fetch = partial(self._fetch, api, ctx)
        async with aclosing(_in_order(listings, fetch, pages_of)) as pages:
            async for result in pages:
                yield result

    async def _listings(
        self, api: GmailApi, ctx: SyncContext, cursor: GmailCursor, fresh: Scope | None
    ) -> AsyncGenerator[_Listed, None]:
        """The backfill's `messages.list` pages, each with the cursor state after it."""
        assert cursor.backfill is not None
        backfill = cursor.backfill
        page_token, count, limit = backfill.page_token, backfill.count, backfill.limit
        estimate: int | None = None
        restarted = False
        while True:
            remaining = None if limit is None else max(0, limit - count)
            page_size = self.settings.gmail_page_size
            if remaining is not None:
                page_size = max(1, min(page_size, remaining))
            try:
                listing = await api.list_messages(
                    query=backfill.query, page_size=page_size, page_token=page_token
                )
            except PageTokenRejected:
                if restarted:
                    raise
                ctx.log.warning("gmail page token refused, listing again from the first page")
                restarted, page_token, count = True, None, 0
                continue
            refs: list[dict[str, Any]] = list(listing.get("messages") or [])
            if remaining is not None:
                refs = refs[:remaining]
            if estimate is None:
                estimate = count + int(listing.get("resultSizeEstimate") or len(refs))
                if limit is not None:
                    estimate = min(estimate, limit)
            count += len(refs)
            page_token = listing.get("nextPageToken")
            done = not page_token or (limit is not None and count >= limit)
            if done:
                state = GmailCursor(INCREMENTAL, cursor.history_id).to_state()
            else:
                state = GmailCursor(
                    BACKFILL,
                    cursor.history_id,
                    Backfill(backfill.query, page_token, count, limit),
                ).to_state()
            ids = [str(r["id"]) for r in refs]
            yield _Listed(ids, state, estimate, done, uncapped=limit is None, fresh=fresh)
            fresh = None
            if done:
                return

    # --- incremental ---------------------------------------------------------------------------

    async def _incremental(
        self, api: GmailApi, ctx: SyncContext, start: str
    ) -> AsyncGenerator[SyncPage, None]:
        pages_of = _PageBuilder(api, api.requests, api.units)  # the first page counts history.list
        actions: dict[str, str] = {}
        latest = start
        page_token: str | None = None
        while True:
            answer = await api.history(start_history_id=start, page_token=page_token)
            for record in answer.get("history") or []:
                _collect(record, actions)
            latest = str(answer.get("historyId") or latest)
            page_token = answer.get("nextPageToken")
            if not page_token:
                break
        deletes = [mid for mid, action in actions.items() if action in (_GONE, _HIDE)]
        to_fetch = [mid for mid, action in actions.items() if action == _FETCH]
        chunk = self.settings.gmail_page_size
        chunks = [to_fetch[i : i + chunk] for i in range(0, len(to_fetch), chunk)] or [[]]

        async def listed() -> AsyncGenerator[_Listed, None]:
            for index, ids in enumerate(chunks):
                last = index == len(chunks) - 1
                # Until the last chunk is accepted the cursor stays where it was: a crash
                # replays the history (idempotent), it never skips a change.
                state = GmailCursor(INCREMENTAL, latest if last else start).to_state()
                gone = deletes if index == 0 else []
                yield _Listed(ids, state, len(to_fetch), last, deletes=gone)

        fetch = partial(self._fetch, api, ctx)
        async with aclosing(_in_order(listed(), fetch, pages_of)) as pages:
            async for result in pages:
                yield result

    # --- messages ------------------------------------------------------------------------------

    async def _fetch(
        self, api: GmailApi, ctx: SyncContext, ids: Sequence[str]
    ) -> tuple[list[MemoryRecord], list[str], dict[str, int]]:
        """Records of the messages still visible; ids of those gone or hidden."""
        upserts: list[MemoryRecord] = []
        deletes: list[str] = []
        stats: dict[str, int] = {}
        if not ids:
            return upserts, deletes, stats
        for message_id, message in zip(ids, await _with_bodies(api, ctx, ids), strict=True):
            if isinstance(message, Unreadable):
                ctx.items.skip(message_id, message.reason)
                continue
            if message is None or HIDDEN_LABELS & set(message.get("labelIds") or ()):
                deletes.append(message_id)
                continue
            # Off the event loop, in the item's time budget; one bad message never fails the
            # sync (headers and snippet are stored when the body cannot be read).
            result = await ctx.items.run(
                message_id,
                transform,
                message,
                ctx.user_id,
                fallback=partial(transform, message, ctx.user_id, body=False),
            )
            if result is None:
                continue
            if result.defects:
                ctx.items.flag(message_id, result.defects)
            upserts.append(result.record)
        return upserts, deletes, stats


#: Pages a reader fetches and transforms at once: the next page's listing and batches are in
#: flight while this one's messages are transformed (the Gmail API and the transform threads
#: are busy together instead of in turn). Three measured no faster than two.
FETCH_AHEAD = 2

_Fetched = tuple[list[MemoryRecord], list[str], dict[str, int]]


@dataclass(frozen=True)
class _Listed:
    """One page to fetch: its message ids and what its `SyncPage` will say."""

    ids: list[str]
    state: dict[str, Any]
    estimate: int | None
    done: bool
    #: A backfill listing every message of its window (its last page completes the scope).
    uncapped: bool = False
    #: The scope a fresh backfill declares with its first page.
    fresh: Scope | None = None
    #: Ids known gone before fetching (an incremental sync's history), sent with this page.
    deletes: list[str] = field(default_factory=list)


class _PageBuilder:
    """Builds each `SyncPage`, with the requests and quota units spent since the previous one."""

    def __init__(self, api: GmailApi, requests: int, units: int) -> None:
        self.api = api
        self.requests = requests
        self.units = units

    def page(self, listed: _Listed, fetched: _Fetched) -> SyncPage:
        """The `SyncPage` of `listed`, once its messages were fetched and transformed."""
        upserts, gone, stats = fetched
        stats["requests"] = self.api.requests - self.requests
        stats["quotaUnits"] = self.api.units - self.units
        self.requests, self.units = self.api.requests, self.api.units
        return SyncPage(
            state=listed.state,
            upserts=upserts,
            deletes=[*listed.deletes, *gone],
            fetched=len(listed.ids),
            total_estimate=listed.estimate,
            stats=stats,
            enumeration_started=[listed.fresh] if listed.fresh is not None else [],
            # Only an uncapped listing saw the whole window (else the engine has no
            # enumeration open for it and sweeps nothing).
            enumeration_completed=[MAILBOX] if listed.done and listed.uncapped else [],
        )


async def _in_order(
    listings: AsyncGenerator[_Listed, None],
    fetch: Callable[[list[str]], Coroutine[Any, Any, _Fetched]],
    pages_of: _PageBuilder,
) -> AsyncGenerator[SyncPage, None]:
    """The page of every listing, in listing order, fetching up to `FETCH_AHEAD` at once.

    A listing is read only when fewer than `FETCH_AHEAD` fetches run; a failed fetch raises
    when its turn comes (the pages before it come out first); the fetches still running are
    cancelled when the pages stop being read.
    """
    running: deque[tuple[_Listed, asyncio.Task[_Fetched]]] = deque()
    try:
        async with aclosing(listings) as listed:
            async for item in listed:
                running.append((item, asyncio.create_task(fetch(item.ids))))
                if len(running) >= FETCH_AHEAD:
                    item, task = running.popleft()
                    yield pages_of.page(item, await task)
        while running:
            item, task = running.popleft()
            yield pages_of.page(item, await task)
    finally:
        for _, task in running:
            task.cancel()
        if running:
            await asyncio.wait([task for _, task in running])
            for _, task in running:
                if not task.cancelled():
                    task.exception()  # retrieved: its outcome is not wanted


@dataclass(frozen=True)
class _End:
    """The last item of a read-ahead queue: the pages ended, or failed with `error`."""

    error: Exception | None = None


async def _read_ahead(
    pages: AsyncGenerator[SyncPage, None],
) -> AsyncGenerator[SyncPage, None]:
    """`pages`, produced by a task of their own up to two pages ahead of the consumer.

    While the engine hands page N to the sink and stores its cursor, pages N+1 and N+2 are
    listed, fetched and transformed. Pages come out in order and only when asked for, so
    nothing of page N+1 reaches the sink or the cursor before page N was accepted; an error
    of the reader comes out after the pages read before it. This holds three pages at most
    (one in the sink, one queued, one read; a page `pages` is still fetching adds one); when
    the consumer stops (an error, a removal, the end) the reader is cancelled.
    """
    queue: asyncio.Queue[SyncPage | _End] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            async for page in pages:
                await queue.put(page)
            await queue.put(_End())
        except Exception as exc:
            await queue.put(_End(exc))
        finally:
            await pages.aclose()

    reader = asyncio.create_task(read())
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        reader.cancel()
        await asyncio.wait([reader])  # a cancellation of the sync itself still propagates
        if not reader.cancelled():
            reader.exception()  # retrieved: its outcome is not wanted


async def _with_bodies(
    api: GmailApi, ctx: SyncContext, ids: Sequence[str]
) -> list[dict[str, Any] | Unreadable | None]:
    """The messages (None when gone, `Unreadable` when over the transport's bounds), with the
    text bodies Gmail stores apart fetched in."""
    messages = await api.get_messages(ids)
    semaphore = asyncio.Semaphore(api.concurrency)

    async def fetch(message_id: str, attachment_id: str) -> bytes | None:
        async with semaphore:
            return await api.attachment(message_id, attachment_id)

    async def fill(
        message: dict[str, Any] | Unreadable | None,
    ) -> dict[str, Any] | Unreadable | None:
        if message is None or isinstance(message, Unreadable):
            return message
        filled, notes = await fill_external_bodies(message, fetch)
        if notes:
            ctx.log.warning("gmail text body not fetched", message_id=message.get("id"), why=notes)
        return filled

    return list(await asyncio.gather(*(fill(message) for message in messages)))


def _current(item: dict[str, Any], actions: dict[str, str]) -> str | None:
    return actions.get(str((item.get("message") or {}).get("id") or ""))


def _collect(record: dict[str, Any], actions: dict[str, str]) -> None:
    """Fold one history record into the latest action per message id."""

    def note(item: dict[str, Any], action: str) -> None:
        message_id = str((item.get("message") or {}).get("id") or "")
        if message_id and actions.get(message_id) != _GONE:
            actions[message_id] = action

    for item in record.get("messagesAdded") or []:
        note(item, _FETCH)
    for item in record.get("labelsAdded") or []:
        hidden = HIDDEN_LABELS & set(item.get("labelIds") or ())
        note(item, _HIDE if hidden or _current(item, actions) == _HIDE else _FETCH)
    for item in record.get("labelsRemoved") or []:
        shown = HIDDEN_LABELS & set(item.get("labelIds") or ())
        note(item, _HIDE if not shown and _current(item, actions) == _HIDE else _FETCH)
    for item in record.get("messagesDeleted") or []:
        note(item, _GONE)
