"""Repository-wide listings that stand in for per-item calls on issues and pull requests.

For the issues and PRs of one listing page, grouped by repository, three listings can replace
one or two calls per item:

- `GET /repos/{o}/{r}/pulls?state=all&sort=updated&direction=desc` (merged_at, draft, base and
  head refs of up to 100 PRs per request), paged only down to the oldest PR of the page;
- `GET /repos/{o}/{r}/issues/comments?since=…&sort=updated&direction=desc` (grouped by the
  number at the end of `issue_url`);
- `GET /repos/{o}/{r}/pulls/comments?since=…&sort=updated&direction=desc` (by
  `pull_request_url`).

Newest first, so a listing cut at its page cap keeps what recent items need. `since` is the
oldest creation date among the items that need the listing (a comment is never updated before
its issue was created), but no earlier than `COMMENT_REACH` before the stream's window.

Guarantees (anything not guaranteed falls back to the per-item call, so no data is lost):

- an index answers for an item only if the item, at that very `updated_at`, was listed before
  the index was read, or its `updated_at` is older than a change seen before the read (a later
  change to the item would have moved its `updated_at` past that: new comments and review
  comments, merges, edits do);
- issue comments are answered only when their number equals the item's `comments` count;
- review comments (the list form of a PR has no count) only when the PR was created within what
  the listing read completely;
- a listing is asked only when at least `BULK_MIN_ITEMS` items of a repository need it and no
  index already answers for them, and reads at most as many pages as there are such items
  (capped at `MAX_BULK_PAGES`): it never costs more requests than the per-item calls;
- memory: indexes keep a few fields per entry, at most `MAX_INDEXES` of them per stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ingestion.providers.github.client import GitHubClient
from ingestion.providers.github.sync import format_time, parse_time

__all__ = [
    "BULK_MIN_ITEMS",
    "COMMENT_REACH",
    "MAX_BULK_PAGES",
    "MAX_INDEXES",
    "Conversations",
    "Index",
]

Kind = Literal["pulls", "comments", "reviews"]

#: A repository-wide listing is asked for at least this many items of one repository.
BULK_MIN_ITEMS = 2
#: Pages one repository-wide listing may read.
MAX_BULK_PAGES = 20
#: Indexes kept by one stream (the oldest goes first).
MAX_INDEXES = 96
#: Comment listings reach back at most this far before the stream's window.
COMMENT_REACH = timedelta(days=30)
#: Fetches of one (repository, kind) per stream: a listing that did not help is not repeated.
MAX_FETCHES = 3

_KINDS: tuple[Kind, ...] = ("pulls", "comments", "reviews")
_PATHS: dict[Kind, str] = {
    "pulls": "pulls",
    "comments": "issues/comments",
    "reviews": "pulls/comments",
}


def _number_of(url: Any) -> int | None:
    tail = str(url or "").rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _user(value: Any) -> dict[str, Any] | None:
    return {"login": value.get("login")} if isinstance(value, Mapping) else None


def _ref(value: Any) -> dict[str, Any]:
    return {"ref": value.get("ref")} if isinstance(value, Mapping) else {}


def _slim(kind: Kind, raw: Mapping[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """The issue number an entry belongs to, and the fields records are built from."""
    if kind == "pulls":
        return _number_of(raw.get("number")), {
            "number": raw.get("number"),
            "state": raw.get("state"),
            "updated_at": raw.get("updated_at"),
            "merged_at": raw.get("merged_at"),
            "draft": raw.get("draft"),
            "base": _ref(raw.get("base")),
            "head": _ref(raw.get("head")),
        }
    slim = {
        "id": raw.get("id"),
        "user": _user(raw.get("user")),
        "body": raw.get("body"),
        "created_at": raw.get("created_at"),
        "updated_at": raw.get("updated_at"),
    }
    if kind == "comments":
        return _number_of(raw.get("issue_url")), slim
    slim.update(path=raw.get("path"), line=raw.get("line"), original_line=raw.get("original_line"))
    return _number_of(raw.get("pull_request_url")), slim


def _id(entry: Mapping[str, Any]) -> int:
    raw = entry.get("id")
    return int(raw) if isinstance(raw, int) else 0


@dataclass
class Index:
    """One repository-wide listing, grouped by issue number."""

    kind: Kind
    entries: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    #: Number → `updated_at` of the items listed before this index was read: the index is
    #: current for those very versions (an item changed since shows a newer `updated_at`).
    listed: Mapping[int, str] = field(default_factory=dict)
    #: A GitHub time before this listing was read: the newest `updated_at` it, an earlier
    #: listing of the repository or the issue listing showed (None when they were empty).
    watermark: datetime | None = None
    #: Comment listings: everything updated at or after `reach` (after, when `cut`) was read.
    reach: datetime | None = None
    cut: bool = False

    def current_for(self, item: Mapping[str, Any]) -> bool:
        if self.listed.get(int(item["number"])) == str(item.get("updated_at")):
            return True
        updated = parse_time(item.get("updated_at"))
        return updated is not None and self.watermark is not None and updated < self.watermark

    def answer(self, item: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The item's entries if this index provably holds all of them, else None."""
        if not self.current_for(item):
            return None
        found = self.entries.get(int(item["number"]), [])
        if self.kind == "pulls":
            return found or None
        if self.kind == "comments":
            return found if len(found) == int(item.get("comments") or 0) else None
        created = parse_time(item.get("created_at"))
        if created is None or self.reach is None:
            return None
        inside = created > self.reach if self.cut else created >= self.reach
        return found if inside else None


def _needs(kind: Kind, item: Mapping[str, Any]) -> bool:
    if kind == "comments":
        return int(item.get("comments") or 0) > 0
    return item.get("pull_request") is not None


class Conversations:
    """The indexes of one issue stream (a repository's issues, or the person's `/issues`)."""

    def __init__(self, client: GitHubClient, page_size: int) -> None:
        self.client = client
        self.page_size = page_size
        self._indexes: dict[tuple[str, Kind], Index] = {}
        self._fetches: dict[tuple[str, Kind], int] = {}
        #: Listings read (for stats and tests).
        self.listings = 0

    async def prepare(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], window_start: datetime
    ) -> None:
        """Read the listings the items of one page (repository, item) justify."""
        by_repo: dict[str, list[Mapping[str, Any]]] = {}
        for repo, item in items:
            by_repo.setdefault(repo, []).append(item)
        # Everything listed so far happened before any listing read from here on.
        seen = _newest(i.get("updated_at") for _, i in items)
        for repo, group in by_repo.items():
            listed = {int(i["number"]): str(i.get("updated_at")) for i in group}
            for kind in _KINDS:
                key = (repo, kind)
                index = self._indexes.get(key)
                needing = [i for i in group if _needs(kind, i)]
                open_items = [i for i in needing if index is None or index.answer(i) is None]
                if len(open_items) < BULK_MIN_ITEMS or self._fetches.get(key, 0) >= MAX_FETCHES:
                    continue
                self._fetches[key] = self._fetches.get(key, 0) + 1
                earlier = [x.watermark for (r, _), x in self._indexes.items() if r == repo]
                fetched = await self._fetch(repo, kind, open_items, listed, window_start)
                if fetched is not None:
                    # Listings are read one after the other: what an earlier one (or the
                    # issue listing) saw happened before this one was read.
                    fetched.watermark = max(
                        (w for w in (fetched.watermark, seen, *earlier) if w is not None),
                        default=None,
                    )
                    self._keep(key, fetched)

    def answer(self, repo: str, kind: Kind, item: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        index = self._indexes.get((repo, kind))
        return None if index is None else index.answer(item)

    def pull(self, repo: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        found = self.answer(repo, "pulls", item)
        return found[0] if found else None

    def _keep(self, key: tuple[str, Kind], index: Index) -> None:
        self._indexes.pop(key, None)
        self._indexes[key] = index
        while len(self._indexes) > MAX_INDEXES:
            self._indexes.pop(next(iter(self._indexes)))

    async def _fetch(
        self,
        repo: str,
        kind: Kind,
        items: Sequence[Mapping[str, Any]],
        listed: Mapping[int, str],
        window_start: datetime,
    ) -> Index | None:
        params: dict[str, Any] = {"sort": "updated", "direction": "desc"}
        stop: datetime | None = None
        reach: datetime | None = None
        if kind == "pulls":
            params = {"state": "all", **params}
            stop = _oldest(i.get("updated_at") for i in items)
        else:
            created = _oldest(i.get("created_at") for i in items) or window_start
            reach = max(created, window_start - COMMENT_REACH)
            params["since"] = format_time(reach)
        params["per_page"] = self.page_size
        url = self.client.url(f"/repos/{repo}/{_PATHS[kind]}", params)
        max_pages = min(MAX_BULK_PAGES, max(BULK_MIN_ITEMS, len(items)))
        index = Index(kind=kind, listed=listed, reach=reach)
        self.listings += 1
        read_all = False
        oldest_seen: datetime | None = None
        pages = 0
        listing = self.client.listing(url, endpoint=f"repo_{kind}", max_pages=max_pages)
        async with contextlib.aclosing(listing) as stream:
            async for page in stream:
                if not page.ok or page.items is None:
                    return None
                pages += 1
                for raw in page.items:
                    if not isinstance(raw, Mapping):
                        continue
                    number, slim = _slim(kind, raw)
                    updated = parse_time(raw.get("updated_at"))
                    if updated is not None:
                        if index.watermark is None or updated > index.watermark:
                            index.watermark = updated
                        oldest_seen = updated
                    if number is not None:
                        index.entries.setdefault(number, []).append(slim)
                last = page.reply.next_url is None
                if last or (stop is not None and oldest_seen is not None and oldest_seen < stop):
                    read_all = True
                    break
        if kind != "pulls":
            for entries in index.entries.values():
                entries.sort(key=_id)
            if not read_all and pages >= max_pages:
                # Cut at the page cap: only what was updated after the last entry is complete.
                index.cut = True
                index.reach = oldest_seen or reach
        return index


def _newest(stamps: Iterable[Any]) -> datetime | None:
    parsed = [p for p in (parse_time(s if isinstance(s, str) else None) for s in stamps) if p]
    return max(parsed) if parsed else None


def _oldest(stamps: Iterable[Any]) -> datetime | None:
    parsed = [p for p in (parse_time(s if isinstance(s, str) else None) for s in stamps) if p]
    return min(parsed) if parsed else None
