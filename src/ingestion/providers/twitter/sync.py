"""The X sync state and the rules that move each timeline's cursor.

Stored state (`ingestion_sync_state.metadata`)::

    {"userId": "…", "username": "…",
     "timelines": {
        "tweets":   {"newestId": "…", "run": {...}?},
        "mentions": {"newestId": "…", "run": {...}?},
        "likes":    {"knownIds": ["…", …], "run": {...}?}},
     "reconcile": {"at": "…", "likeAnchors": [["…", "…"], …]}}   # see reconcile.py

Guarantees:

- Posts and mentions page newest first with `since_id` = `newestId` (exclusive); a first sync
  uses `start_time` = the backfill window's start instead. A pass over several pages keeps its
  position in `run`: the pagination token, the oldest id already accepted (`untilId`, used if X
  refuses the token), and the pass's newest id (`pendingNewestId`). `newestId` is promoted only
  when the last page of the pass is accepted, so a pass stopped at any page (deferral, budget,
  crash) resumes where it stopped: no gap below the stored `newestId`, no page fetched twice.
- Likes have no `since_id`: they page from the most recently liked until a post in `knownIds`
  (the newest liked ids of the last finished pass, several so one unlike cannot hide the stop
  mark); the first page of such a pass is a small probe, since X bills every post read. A
  pass in progress keeps its token and stop set in `run`; `knownIds` is replaced when it
  finishes.
- Every yielded page carries the whole state as it is *after* that page, never ahead of it.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import SyncPage
from ingestion.providers.twitter.client import (
    PaginationTokenRefused,
    TimelinePage,
    TwitterClient,
)
from ingestion.providers.twitter.transform import Includes, to_record

__all__ = [
    "KNOWN_LIKES",
    "TIMELINES",
    "Budget",
    "TimelineCursor",
    "TimelineWalk",
    "TwitterCursor",
    "walk_timeline",
]

TIMELINES = ("tweets", "mentions", "likes")
#: How many of the newest liked ids are remembered as stop marks for the next pass.
KNOWN_LIKES = 20
#: First page size of a likes pass that has stop marks: posts read count against X's monthly
#: cap, and a quiet pass finds a known like at the top.
LIKES_PROBE = 10


@dataclass
class TimelineCursor:
    newest_id: str | None = None
    known_ids: list[str] = field(default_factory=list)
    #: An unfinished pass (see the module docstring); None between passes.
    run: dict[str, Any] | None = None

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> TimelineCursor:
        value = value or {}
        run = value.get("run")
        return cls(
            newest_id=value.get("newestId"),
            known_ids=[str(i) for i in value.get("knownIds") or []],
            run=dict(run) if isinstance(run, Mapping) else None,
        )

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.newest_id is not None:
            state["newestId"] = self.newest_id
        if self.known_ids:
            state["knownIds"] = list(self.known_ids)
        if self.run is not None:
            state["run"] = copy.deepcopy(self.run)
        return state


@dataclass
class TwitterCursor:
    user_id: str | None = None
    username: str | None = None
    timelines: dict[str, TimelineCursor] = field(default_factory=dict)
    #: The reconciliation pass's own state (`ingestion.providers.twitter.reconcile`).
    reconcile: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> TwitterCursor:
        timelines = state.get("timelines") or {}
        reconcile = state.get("reconcile")
        return cls(
            user_id=state.get("userId"),
            username=state.get("username"),
            timelines={name: TimelineCursor.of(timelines.get(name)) for name in TIMELINES},
            reconcile=copy.deepcopy(dict(reconcile)) if isinstance(reconcile, Mapping) else {},
        )

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "userId": self.user_id,
            "username": self.username,
            "timelines": {name: cursor.as_state() for name, cursor in self.timelines.items()},
        }
        if self.reconcile:
            state["reconcile"] = copy.deepcopy(self.reconcile)
        return state


@dataclass
class Budget:
    """Pages this sync may still fetch, and items it may still upsert (`--max-results`)."""

    pages: int
    items: int | None = None
    exhausted: bool = False

    def take_page(self) -> bool:
        if self.pages <= 0 or (self.items is not None and self.items <= 0):
            self.exhausted = True
            return False
        self.pages -= 1
        return True

    def spend_items(self, count: int) -> None:
        if self.items is not None:
            self.items -= count


@dataclass
class TimelineWalk:
    """What one timeline walk needs besides its cursor."""

    client: TwitterClient
    cursor: TwitterCursor
    user_id: str
    backfill_start: str
    budget: Budget
    #: returns and resets the requests sent since the last page (for run statistics)
    requests_delta: Callable[[], int]


def walk_timeline(walk: TimelineWalk, kind: str) -> AsyncIterator[SyncPage]:
    return _walk_ids(walk, kind) if kind != "likes" else _walk_likes(walk)


async def _records(
    walk: TimelineWalk, kind: str, page: TimelinePage, posts: list[dict[str, Any]]
) -> list[MemoryRecord]:
    """The page's records, each transformed off the event loop in its time budget; a post that
    cannot be transformed is skipped and counted, the others are kept."""
    includes = Includes.of(page.includes)
    account = walk.cursor.user_id or ""
    records: list[MemoryRecord] = []
    for post in posts:
        record = await walk.client.ctx.items.run(
            str(post.get("id"))[:100],
            partial(
                to_record,
                post,
                includes,
                user_id=walk.user_id,
                account_user_id=account,
                account_username=walk.cursor.username,
                timeline=kind,
            ),
        )
        if record is not None:
            records.append(record)
    return records


def _page(walk: TimelineWalk, records: list[MemoryRecord], fetched: int) -> SyncPage:
    walk.budget.spend_items(len(records))
    return SyncPage(
        state=walk.cursor.as_state(),
        upserts=records,
        fetched=fetched,
        stats={"requests": walk.requests_delta()},
    )


async def _walk_ids(walk: TimelineWalk, kind: str) -> AsyncIterator[SyncPage]:
    """Posts or mentions: `since_id` passes with a checkpointed pagination token."""
    timeline = walk.cursor.timelines[kind]
    run = timeline.run
    if run is None:
        run = (
            {"sinceId": timeline.newest_id}
            if timeline.newest_id
            else {"startTime": walk.backfill_start}
        )
    account = walk.cursor.user_id or ""
    while walk.budget.take_page():
        params: dict[str, str] = {}
        if run.get("sinceId"):
            params["since_id"] = run["sinceId"]
        elif run.get("startTime"):
            params["start_time"] = run["startTime"]
        if run.get("token"):
            params["pagination_token"] = run["token"]
        elif run.get("untilId"):
            params["until_id"] = run["untilId"]
        try:
            page = await walk.client.timeline(kind, account, params)
        except PaginationTokenRefused:
            run.pop("token", None)
            continue
        if page.data and not run.get("pendingNewestId"):
            run["pendingNewestId"] = str(page.meta.get("newest_id") or page.data[0]["id"])
        records = await _records(walk, kind, page, page.data)
        if page.next_token:
            run["token"] = page.next_token
            run["untilId"] = str(page.meta.get("oldest_id") or page.data[-1]["id"])
            timeline.run = run
            yield _page(walk, records, len(page.data))
            continue
        if run.get("pendingNewestId"):
            timeline.newest_id = run["pendingNewestId"]
        timeline.run = None
        yield _page(walk, records, len(page.data))
        return


async def _walk_likes(walk: TimelineWalk) -> AsyncIterator[SyncPage]:
    """Liked posts: newest-liked first until a known liked id (no `since_id` on this endpoint)."""
    timeline = walk.cursor.timelines["likes"]
    run = timeline.run or {"stopAt": list(timeline.known_ids), "seen": []}
    account = walk.cursor.user_id or ""
    while walk.budget.take_page():
        params: dict[str, str] = {}
        if run.get("token"):
            params["pagination_token"] = run["token"]
        elif run["stopAt"]:
            params["max_results"] = str(LIKES_PROBE)
        try:
            page = await walk.client.timeline("likes", account, params)
        except PaginationTokenRefused:
            run.pop("token", None)  # start again from the newest like; upserts are idempotent
            continue
        stop_at = set(run["stopAt"])
        fresh: list[dict[str, Any]] = []
        reached_known = False
        for post in page.data:
            if str(post["id"]) in stop_at:
                reached_known = True
                break
            fresh.append(post)
        seen = run["seen"]
        for post in fresh:
            if len(seen) >= KNOWN_LIKES:
                break
            if str(post["id"]) not in seen:
                seen.append(str(post["id"]))
        records = await _records(walk, "likes", page, fresh)
        if page.next_token and not reached_known:
            run["token"] = page.next_token
            timeline.run = run
            yield _page(walk, records, len(page.data))
            continue
        merged = list(dict.fromkeys([*seen, *run["stopAt"]]))
        timeline.known_ids = merged[:KNOWN_LIKES]
        timeline.run = None
        yield _page(walk, records, len(page.data))
        return
