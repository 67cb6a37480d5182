"""Google Calendar: every calendar the user reads, kept in step with sync tokens.

One sync, in order:

1. **Calendar list.** Read in full every time (one request for up to 250 calendars), never
   with its sync token, which leaves out entries whose only change is the ACL or a calendar
   property (calendarList.list reference): what the list shows is the truth. Calendars the
   user owns or reads (`owner`/`writer`/`reader`) and has not hidden are mirrored; one that
   leaves that set (access lowered to `freeBusyReader`, hidden, removed) is queued for removal,
   one that joins it gets a full sync, a renamed one is listed again so its records carry the
   new name. These consequences are written into the cursor of the first page.
2. **Removals.** A removed calendar's events are listed one last time (no time window) and every
   listed id is deleted; then the calendar is declared a scope gone (`{calendarId}/`), so the
   engine deletes every record it remembers delivering from it, listed or not. A calendar that
   is *no longer readable* at all (deleted, or its owner stopped sharing it: 404) cannot be
   listed: it is declared gone at once (counted in the run's `calendarsUnreadable` statistic),
   and so is a mirrored calendar that starts answering 404.
3. **Each calendar.** A full sync lists the window `CALENDAR_PAST_DAYS` (default
   `BACKFILL_DAYS`) back to `CALENDAR_FUTURE_DAYS` ahead with `singleEvents=false` (series
   stay one master with its RRULE; moved or cancelled occurrences are their own events with
   `recurringEventId`),
   2500 per page, checkpointing the page token after every page; the `nextSyncToken` of the
   last page is stored. Later syncs send only the token: changed events are upserted,
   cancelled ones deleted. No change costs one request per calendar and upserts nothing.
   A 410 clears that calendar's token and re-runs its full sync alone, with `showDeleted` so
   events deleted while the token was dead are deleted here too; ids are stable, so nothing is
   duplicated Every fresh full listing is a full enumeration of
   the scope `{calendarId}/` within its window (a day inside each end, for all-day events in
   any zone): when its last page is accepted, the engine deletes the records of that calendar
   and window it remembers but the listing no longer had (events purged during a 410 gap).

A cancelled *occurrence* of a series that still exists is kept as a record of its own
(`Cancelled: …`, status `cancelled`), because the master's RRULE still produces that date and
only this record tells a reader it will not happen. When the whole series is cancelled, its
exception records are deleted with it (the scope `{calendarId}/{seriesId}_`), whether or not
each exception is reported cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from ingestion.config import Settings
from ingestion.errors import PermanentError
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import Scope, SyncContext, SyncPage
from ingestion.providers.calendar.client import CalendarApi, CalendarGone, SyncTokenExpired
from ingestion.providers.calendar.sync import CalendarCursor, CalendarEntry, is_mirrored
from ingestion.providers.calendar.transform import event_record, source_id

__all__ = ["CalendarProvider"]

#: How far inside the listing window the swept window stays (all-day events and time zones).
_WINDOW_MARGIN = timedelta(days=1)

#: Series masters looked up (for cancelled occurrences) are remembered up to this many per run.
_SERIES_CACHE = 512


class CalendarProvider:
    """Mirrors every readable, visible Google Calendar of the user (see the module docstring)."""

    name: ClassVar[str] = "calendar"
    account_provider: ClassVar[str] = "google"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        run = _CalendarRun(self.settings, ctx)
        async for page in run.pages():
            yield page


class _CalendarRun:
    def __init__(self, settings: Settings, ctx: SyncContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.cursor = CalendarCursor.of(ctx.state)
        self.api = CalendarApi(
            base_url=settings.calendar_api_url,
            http=ctx.http,
            tokens=ctx.tokens,
            requests_per_minute=settings.calendar_quota_requests_per_minute,
        )
        self.upserted = 0
        self._counted_requests = 0
        self._series: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        #: Scopes of the exceptions of series cancelled in the page being built.
        self._series_gone: list[str] = []

    # --- pages ---------------------------------------------------------------------------
    async def pages(self) -> AsyncIterator[SyncPage]:
        """Every page, with pages that carry no items folded into the next one.

        A page without upserts or deletes only moves the cursor; holding it back until the next
        page (whose state includes it) or the end costs at most a repeated request after a
        crash, and saves a checkpoint per unchanged calendar.
        """
        held: SyncPage | None = None
        async for page in self._pages():
            if held is not None:
                page = _merge(held, page)
                held = None
            if not page.upserts and not page.deletes:
                held = page
                continue
            yield page
        if held is not None:
            yield held

    async def _pages(self) -> AsyncIterator[SyncPage]:
        stats = await self._refresh_list()
        if stats:
            yield self._page(stats=stats)
        for calendar_id in list(self.cursor.removing):
            async for page in self._drain(calendar_id):
                yield page
        for calendar_id in sorted(self.cursor.calendars):
            entry = self.cursor.calendars[calendar_id]
            listing = (
                self._incremental(calendar_id, entry)
                if entry.sync_token
                else self._full(calendar_id, entry)
            )
            async for page in listing:
                yield page
                if self._enough():
                    return

    def _page(
        self,
        *,
        upserts: list[MemoryRecord] | None = None,
        deletes: list[str] | None = None,
        fetched: int = 0,
        stats: Mapping[str, int] | None = None,
        started: Scope | None = None,
        completed: str | None = None,
        gone: str | None = None,
    ) -> SyncPage:
        requests = self.api.requests - self._counted_requests
        self._counted_requests = self.api.requests
        self.upserted += len(upserts or [])
        series_gone, self._series_gone = self._series_gone, []
        return SyncPage(
            state=self.cursor.to_json(),
            upserts=upserts or [],
            deletes=deletes or [],
            fetched=fetched,
            stats={"requests": requests, **(stats or {})},
            enumeration_started=[started] if started else [],
            enumeration_completed=[completed] if completed is not None else [],
            scopes_gone=[*series_gone, *([gone] if gone is not None else [])],
        )

    def _past_days(self) -> int:
        """How far back a full listing reaches: `CALENDAR_PAST_DAYS` when set, else the
        `BACKFILL_DAYS` every provider's first sync uses."""
        past = self.settings.calendar_past_days
        return self.settings.backfill_days if past is None else past

    def _enough(self) -> bool:
        limit = self.ctx.options.max_results
        return limit is not None and self.upserted >= limit

    # --- calendar list -------------------------------------------------------------------
    async def _refresh_list(self) -> dict[str, int]:
        """Bring the set of mirrored calendars up to date from the whole list; returns what
        changed.

        The list is read in full on every sync (one request for up to 250 calendars), never
        with its sync token: that token leaves out entries whose only change is a read-only
        field or the ACL (calendarList.list reference), so access lowered to `freeBusyReader`
        or a renamed calendar would never be seen.
        """
        include_hidden = self.settings.calendar_include_hidden
        entries: list[dict[str, Any]] = []
        await self._read_list(None, entries)
        added = removed = renamed = 0
        seen: set[str] = set()
        for entry in entries:
            calendar_id = entry.get("id")
            if not isinstance(calendar_id, str) or not calendar_id:
                continue
            seen.add(calendar_id)
            if not is_mirrored(entry, include_hidden=include_hidden):
                removed += self.cursor.remove(calendar_id)
                continue
            known = self.cursor.calendars.get(calendar_id)
            before = known.name if known is not None else None
            added += self.cursor.add(calendar_id, entry)
            if known is not None and known.name != before:
                # Every record names its calendar: list it again so they carry the new name.
                known.restart_full(show_deleted=False)
                renamed += 1
        # A complete list: whatever is not on it any more has left it.
        for calendar_id in [c for c in self.cursor.calendars if c not in seen]:
            removed += self.cursor.remove(calendar_id)
        self.cursor.list_sync_token = None
        self.cursor.include_hidden = include_hidden
        changed = {
            "calendarsAdded": added,
            "calendarsRemoved": removed,
            "calendarsRenamed": renamed,
        }
        changed = {key: value for key, value in changed.items() if value}
        if changed:
            self.ctx.log.info("calendar list changed", **changed)
        return changed

    async def _read_list(self, sync_token: str | None, into: list[dict[str, Any]]) -> str | None:
        page_token: str | None = None
        while True:
            page = await self.api.calendar_list(sync_token=sync_token, page_token=page_token)
            into.extend(page.items)
            if not page.next_page_token:
                return page.next_sync_token
            page_token = page.next_page_token

    # --- removed calendars ---------------------------------------------------------------
    async def _drain(self, calendar_id: str) -> AsyncIterator[SyncPage]:
        """Delete a removed calendar's records, from one last listing of its events."""
        while calendar_id in self.cursor.removing:
            page_token = self.cursor.removing[calendar_id] or None
            try:
                page = await self.api.events(
                    calendar_id, page_token=page_token, page_size=self.settings.calendar_page_size
                )
            except SyncTokenExpired:
                self.cursor.removing[calendar_id] = ""
                if page_token is None:
                    raise
                continue
            except (CalendarGone, PermanentError) as exc:
                self.ctx.log.info(
                    "removed calendar is not readable; deleting every record delivered from it",
                    calendar_id=calendar_id,
                    error=str(exc),
                )
                del self.cursor.removing[calendar_id]
                yield self._page(stats={"calendarsUnreadable": 1}, gone=_scope(calendar_id))
                return
            deletes = [source_id(calendar_id, str(e["id"])) for e in page.items if e.get("id")]
            last = not page.next_page_token
            if last:
                del self.cursor.removing[calendar_id]
            else:
                self.cursor.removing[calendar_id] = str(page.next_page_token)
            yield self._page(
                deletes=deletes,
                fetched=len(page.items),
                gone=_scope(calendar_id) if last else None,
            )

    # --- one calendar's events -----------------------------------------------------------
    async def _full(self, calendar_id: str, entry: CalendarEntry) -> AsyncIterator[SyncPage]:
        started: Scope | None = None
        if entry.window is None:
            now = self.ctx.clock.now()
            start = self.ctx.options.since or _window_start(now, self._past_days())
            end = now + timedelta(days=self.settings.calendar_future_days)
            entry.window = (_rfc3339(start), _rfc3339(end))
            # A fresh listing (a resumed one was declared by its first page).
            started = Scope(
                _scope(calendar_id),
                since=_parse_rfc3339(entry.window[0]) + _WINDOW_MARGIN,
                until=_parse_rfc3339(entry.window[1]) - _WINDOW_MARGIN,
            )
        time_min, time_max = entry.window
        restarted = False
        while True:
            try:
                page = await self.api.events(
                    calendar_id,
                    page_token=entry.page_token,
                    time_min=time_min,
                    time_max=time_max,
                    show_deleted=entry.show_deleted,
                    page_size=self.settings.calendar_page_size,
                )
            except SyncTokenExpired:
                if entry.page_token is None or restarted:
                    raise PermanentError(
                        f"calendar events.list of {calendar_id!r}: HTTP 410 on a full listing"
                    ) from None
                restarted, entry.page_token = True, None
                continue
            except CalendarGone:
                yield self._vanished(calendar_id)
                return
            entry.time_zone = page.time_zone or entry.time_zone
            upserts, deletes = await self._records(calendar_id, entry, page.items)
            if page.next_page_token:
                entry.page_token = page.next_page_token
            else:
                entry.page_token, entry.window, entry.show_deleted = None, None, False
                entry.sync_token = page.next_sync_token
            yield self._page(
                upserts=upserts,
                deletes=deletes,
                fetched=len(page.items),
                started=started,
                completed=_scope(calendar_id) if entry.page_token is None else None,
            )
            started = None
            if entry.page_token is None or self._enough():
                return

    async def _incremental(self, calendar_id: str, entry: CalendarEntry) -> AsyncIterator[SyncPage]:
        while True:
            try:
                page = await self.api.events(
                    calendar_id,
                    sync_token=entry.sync_token,
                    page_token=entry.page_token,
                    page_size=self.settings.calendar_page_size,
                )
            except SyncTokenExpired as exc:
                if exc.page_token_refused and entry.page_token is not None:
                    entry.page_token = None  # resume from the sync token alone
                    continue
                self.ctx.log.info(
                    "calendar sync token expired; full sync of this calendar",
                    calendar_id=calendar_id,
                )
                entry.restart_full(show_deleted=True)
                first = True
                async for resync_page in self._full(calendar_id, entry):
                    if first:
                        first = False
                        resync_page = _with_stat(resync_page, "fullResyncs", 1)
                    yield resync_page
                return
            except CalendarGone:
                yield self._vanished(calendar_id)
                return
            entry.time_zone = page.time_zone or entry.time_zone
            upserts, deletes = await self._records(calendar_id, entry, page.items)
            if page.next_page_token:
                entry.page_token = page.next_page_token
            else:
                entry.page_token = None
                entry.sync_token = page.next_sync_token or entry.sync_token
            yield self._page(upserts=upserts, deletes=deletes, fetched=len(page.items))
            if entry.page_token is None or self._enough():
                return

    def _vanished(self, calendar_id: str) -> SyncPage:
        """A listed calendar answered 404: drop it, delete every record delivered from it, and
        re-read the whole list next time."""
        self.ctx.log.warning("calendar is no longer readable", calendar_id=calendar_id)
        self.cursor.calendars.pop(calendar_id, None)
        self.cursor.list_sync_token = None
        return self._page(stats={"calendarsUnreadable": 1}, gone=_scope(calendar_id))

    # --- events → records ----------------------------------------------------------------
    async def _records(
        self, calendar_id: str, entry: CalendarEntry, items: list[dict[str, Any]]
    ) -> tuple[list[MemoryRecord], list[str]]:
        in_page = {e["id"]: e for e in items if e.get("id")}
        upserts: list[MemoryRecord] = []
        deletes: list[str] = []
        for event in items:
            event_id = event.get("id")
            if not event_id:
                continue
            if event.get("status") == "cancelled":
                series_id = event.get("recurringEventId")
                series = None
                if series_id:
                    series = in_page.get(series_id) or await self._series_of(calendar_id, series_id)
                else:
                    # A cancelled event that is not an occurrence may be a whole series: its
                    # exceptions ({eventId}_{originalStart}) go with it, whether or not each
                    # one is reported cancelled too.
                    self._series_gone.append(_series_scope(calendar_id, str(event_id)))
                if series is None or series.get("status") == "cancelled":
                    deletes.append(source_id(calendar_id, str(event_id)))
                    continue
                record = await self._record(calendar_id, entry, event, series)
            else:
                record = await self._record(calendar_id, entry, event, None)
            if record is not None:
                upserts.append(record)
        return upserts, deletes

    async def _record(
        self,
        calendar_id: str,
        entry: CalendarEntry,
        event: Mapping[str, Any],
        series: Mapping[str, Any] | None,
    ) -> MemoryRecord | None:
        """The event's record, transformed off the event loop in its time budget; `None` (the
        event skipped and counted, the sync going on) when it cannot be transformed at all."""
        return await self.ctx.items.run(
            source_id(calendar_id, str(event["id"])),
            partial(
                event_record,
                self.ctx.user_id,
                calendar_id,
                event,
                calendar_name=entry.name,
                calendar_zone=entry.time_zone,
                series=series,
            ),
        )

    async def _series_of(self, calendar_id: str, series_id: str) -> Mapping[str, Any] | None:
        key = (calendar_id, series_id)
        if key not in self._series:
            if len(self._series) >= _SERIES_CACHE:
                self._series.pop(next(iter(self._series)))
            try:
                self._series[key] = await self.api.event(calendar_id, series_id)
            except CalendarGone:
                self._series[key] = None
        return self._series[key]


def _merge(earlier: SyncPage, later: SyncPage) -> SyncPage:
    """`later` (whose state already includes `earlier`'s) with `earlier`'s counts and
    reconciliation declarations added (earlier ones first)."""
    stats = dict(later.stats)
    for key, value in earlier.stats.items():
        stats[key] = stats.get(key, 0) + value
    return replace(
        later,
        fetched=earlier.fetched + later.fetched,
        stats=stats,
        enumeration_started=[*earlier.enumeration_started, *later.enumeration_started],
        enumeration_completed=[*earlier.enumeration_completed, *later.enumeration_completed],
        scopes_gone=[*earlier.scopes_gone, *later.scopes_gone],
    )


def _with_stat(page: SyncPage, key: str, value: int) -> SyncPage:
    stats = dict(page.stats)
    stats[key] = stats.get(key, 0) + value
    return replace(page, stats=stats)


def _series_scope(calendar_id: str, series_id: str) -> str:
    """The `sourceId` prefix of a series' exceptions: Google names an exception
    `{seriesId}_{originalStart}` (the ids it generates are base32hex, without `_`)."""
    return source_id(calendar_id, f"{series_id}_")


def _scope(calendar_id: str) -> str:
    """The reconciliation scope of one calendar: the `sourceId` prefix of its events."""
    return source_id(calendar_id, "")


#: The earliest window start sent (RFC 3339 wants four-digit years; nothing older is on a calendar).
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


def _window_start(now: datetime, days: int) -> datetime:
    try:
        return max(now - timedelta(days=days), _EARLIEST)
    except OverflowError:  # a window reaching before year 1
        return _EARLIEST


def _parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC, as `timeMin`/`timeMax` want it (a naive time is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
