"""The GitHub provider: a person's commits, issues and pull requests, incrementally.

Scope of one sync (configurable through `GITHUB_REPOS_ALLOW`/`_DENY`, `BACKFILL_DAYS`):

1. `GET /user` (login) and `GET /user/repos` (owner, collaborator, organisation member), both
   conditional; repositories pass the allow/deny globs and must have been pushed to within the
   backfill window;
2. per repository, commits on the default branch authored by the login (GitHub attributes a
   commit to a login through the account's verified emails) since the stream cursor; details
   (files, patches; >300 files paginated) are fetched only for commits not yet ingested, and
   the listing is skipped altogether while the repository's `pushed_at` is unchanged;
3. per owned repository, every issue and PR updated since the cursor;
4. `GET /issues?state=all` updated since the cursor, once per filter: `created`, `assigned`,
   `mentioned` and `subscribed` (what the person takes part in), or only `all` (every issue
   the token can see) with `GITHUB_ISSUES_FILTER=all`; within the allow/deny globs;
5. the conversation of the issues and PRs of one listing page comes from repository-wide
   listings where they are cheaper (`conversations.py`: `/pulls` for merged/draft/refs,
   `/issues/comments`, `/pulls/comments`), else per item: `/pulls/{n}` for a PR, and its
   comment listings (issue comments only when the `comments` count says there are some).

Guarantees: pages are yielded oldest-first within a stream with a complete state, so a
deferral (`RateLimited` at the primary-limit reset or before the reserve is spent) resumes
without duplicates; an unchanged account costs only 304s; a repository answering 403 (not a
rate limit) is skipped with a warning and keeps its cursor; 409 (empty repository) and 422 skip
one stream, never the whole sync; 401 goes through the token service (then `ReauthRequired`).

Deletions no cursor reports (see `_forget_repo` and `_check_issues`):

- a repository we synced that answers 404/410/451 to a repository call, or is missing from a
  complete (changed, all pages read) `/user/repos` listing, is dropped from the state and every
  record under `owner/repo@` and `owner/repo#` is deleted (`scopes_gone`);
- an owned repository's whole issue listing (`state=all`, conditional) is read at most once
  per `ISSUE_CHECK_EVERY`: an issue or PR delivered from it that is no longer listed was deleted
  or transferred to another repository (GitHub gives it a new number and id there and answers
  the old URL with 301), and its record is deleted. All pages 304 = nothing changed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, TypeVar

from ingestion.config import Settings
from ingestion.errors import PermanentError
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import Scope, SyncContext, SyncPage
from ingestion.providers.github.client import GitHubClient, Reply
from ingestion.providers.github.conversations import Conversations
from ingestion.providers.github.sync import (
    COMMIT_LOOKBACK,
    GitHubState,
    RepoInfo,
    StreamCursor,
    format_time,
    newest,
    parse_time,
    repo_selected,
)
from ingestion.providers.github.transform import commit_record, issue_record
from ingestion.providers.http import api_error

__all__ = ["GitHubProvider"]

T = TypeVar("T")

#: Commits whose details are fetched (concurrently) and yielded as one page.
COMMIT_CHUNK = 50
#: GitHub serves at most 3,000 files of a commit, 300 per page.
MAX_FILE_PAGES = 10
#: A repository pushed to this recently gets its commit listing asked again next time.
PUSH_SETTLE = timedelta(minutes=2)
#: `/issues` filters (GitHub REST "List issues assigned to the authenticated user": `filter`
#: = assigned | created | mentioned | subscribed | repos | all) by `GITHUB_ISSUES_FILTER`.
ISSUE_FILTERS: dict[str, tuple[str, ...]] = {
    "participating": ("created", "assigned", "mentioned", "subscribed"),
    "all": ("all",),
}
#: A comparison longer than this many pages is replaced by a re-walk by date.
MAX_COMPARE_PAGES = 10
#: How far back a re-walk by date reaches when the last head cannot be compared (a force-push
#: whose old head was garbage-collected): rebased commits carry a new committer date.
REWALK_WINDOW = timedelta(days=30)
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: A repository answering these to a repository-level call is skipped, cursor kept.
GONE = (403, 404, 410, 451)
#: ...and with these it is gone for good (deleted, access lost, unavailable for legal
#: reasons): its records are deleted. 403 (blocked, SSO not authorised) may pass.
REPO_GONE = (404, 410, 451)
#: How often an owned repository's whole issue listing is read to find issues deleted or
#: transferred away (no `since` listing shows them).
ISSUE_CHECK_EVERY = timedelta(days=1)


class _RepoGone(Exception):
    def __init__(self, repo: str, reply: Reply) -> None:
        super().__init__(repo)
        self.repo = repo
        self.reply = reply


class _Stop(Exception):
    """`max_results` reached."""


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the others and raise it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass
class _Walk:
    """What one walk of a listing saw."""

    items: list[Any]
    etags: list[tuple[str, str]]
    pages: int
    changed: bool


class GitHubProvider:
    name: ClassVar[str] = "github"
    account_provider: ClassVar[str] = "github"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        run = _Run(self.settings, ctx)
        try:
            async for page in run.pages():
                yield page
        except _Stop:
            yield run.page([])


class _Run:
    """One sync of one account (the state object is mutated only at yield points)."""

    def __init__(self, settings: Settings, ctx: SyncContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.log = ctx.log
        self.state = GitHubState.load(ctx.state)
        self.client = GitHubClient(
            base_url=settings.github_api_url,
            http=ctx.http,
            tokens=ctx.tokens,
            user_id=ctx.user_id,
            concurrency=settings.github_concurrency,
            reserve=settings.github_rate_limit_reserve,
            now=lambda: ctx.clock.now().timestamp(),
        )
        now = ctx.clock.now()
        self.floor: datetime = ctx.options.since or (now - timedelta(days=settings.backfill_days))
        self.max_results = ctx.options.max_results
        self.upserted = 0
        #: sourceId → updated_at taken in this run (issues come from two listings).
        self.taken: dict[str, str] = {}
        #: Repositories found gone, whose records the next page deletes (`scopes_gone`).
        self.gone: list[str] = []
        self._reported = {"requests": 0, "notModified": 0, "rateLimitUnits": 0}

    # --- pages and stats ---------------------------------------------------------------------
    def page(self, records: list[MemoryRecord], fetched: int | None = None) -> SyncPage:
        current = {
            "requests": self.client.requests,
            "notModified": self.client.not_modified,
            "rateLimitUnits": self.client.units_used,
        }
        stats = {k: v - self._reported[k] for k, v in current.items()}
        self._reported = current
        self.upserted += len(records)
        gone = [prefix for repo in self.gone for prefix in (f"{repo}@", f"{repo}#")]
        self.gone = []
        return SyncPage(
            state=self.state.dump(),
            upserts=records,
            fetched=len(records) if fetched is None else fetched,
            stats=stats,
            scopes_gone=gone,
        )

    def _chunk_size(self) -> int:
        if self.max_results is None:
            return COMMIT_CHUNK
        return max(1, min(COMMIT_CHUNK, self.max_results - self.upserted))

    def _check_budget(self) -> None:
        if self.max_results is not None and self.upserted >= self.max_results:
            raise _Stop

    # --- the sync ----------------------------------------------------------------------------
    async def pages(self) -> AsyncIterator[SyncPage]:
        await self._user()
        await self._repos()
        yield self.page([])
        for info in list(self.state.repos.values()):
            if not self._in_scope(info):
                continue
            try:
                async for page in self._commits(info):
                    yield page
                if info.own:
                    async for page in self._repo_issues(info):
                        yield page
                    async for page in self._check_issues(info):
                        yield page
            except _RepoGone as gone:
                if gone.reply.status in REPO_GONE:
                    self._forget_repo(gone.repo, gone.reply.status)
                    yield self.page([])
                    continue
                self.log.warning(
                    "github repository skipped",
                    repo=gone.repo,
                    status=gone.reply.status,
                    reason=_message(gone.reply),
                )
        async for page in self._user_issues():
            yield page
        yield self.page([])

    def _settled(self, pushed_at: str | None) -> str | None:
        """`pushed_at` if it is older than `PUSH_SETTLE` (GitHub stamps whole seconds: a push
        in the same second as the last one would leave it unchanged), else None, so the next
        sync asks the (conditional, usually 304) commit listing again."""
        when = parse_time(pushed_at)
        if when is None or when > self.ctx.clock.now() - PUSH_SETTLE:
            return None
        return pushed_at

    def _in_scope(self, info: RepoInfo) -> bool:
        if not info.listed:
            return False
        if not repo_selected(
            info.full_name, self.settings.github_repos_allow, self.settings.github_repos_deny
        ):
            return False
        pushed = parse_time(info.pushed_at)
        return pushed is None or pushed >= self.floor

    async def _user(self) -> None:
        url = self.client.url("/user")
        etag = self.state.user_etag if self.state.login else None
        reply = await self.client.get(url, endpoint="user", etag=etag)
        if reply.not_modified:
            return
        if reply.status != 200 or not isinstance(reply.data, Mapping):
            raise api_error("github", "user", reply.response)
        self.state.login = str(reply.data["login"])
        self.state.user_etag = reply.etag

    async def _repos(self) -> None:
        params = {
            "affiliation": "owner,collaborator,organization_member",
            "sort": "full_name",
            "per_page": self.settings.github_page_size,
        }
        url = self.client.url("/user/repos", params)
        walk = await self._walk(url, "user_repos", self.state.repos_etags)
        if walk is None or not walk.changed:
            return
        listed: dict[str, Mapping[str, Any]] = {str(r["full_name"]): r for r in walk.items}
        for name in [n for n in self.state.repos if n not in listed]:
            self._forget_repo(name, None)
        for name, repo in listed.items():
            info = self.state.repos.get(name) or RepoInfo(full_name=name)
            info.branch = str(repo.get("default_branch") or "main")
            info.pushed_at = repo.get("pushed_at")
            info.own = (repo.get("owner") or {}).get("login") == self.state.login
            info.listed = True
            self.state.repos[name] = info
        self.state.repos_etags = walk.etags

    def _forget_repo(self, repo: str, status: int | None) -> None:
        """The repository is gone (deleted, access lost): drop its cursor; the next page
        deletes its records."""
        self.state.repos.pop(repo, None)
        self.gone.append(repo)
        self.log.info(
            "github repository gone; deleting its records",
            repo=repo,
            reason=f"answered {status}" if status else "no longer in /user/repos",
        )

    async def _check_issues(self, info: RepoInfo) -> AsyncIterator[SyncPage]:
        """Read the owned repository's whole issue listing (at most once per
        `ISSUE_CHECK_EVERY`, conditionally) and delete the records of issues and PRs it no
        longer lists. Only their numbers are kept in memory."""
        now = self.ctx.clock.now()
        checked = parse_time(info.issues_checked)
        if self.max_results is not None:
            return
        if checked is None:  # first sync of the repository: its issues were just listed
            info.issues_checked = format_time(now)
            return
        if now - checked < ISSUE_CHECK_EVERY:
            return
        listed = await self._issue_numbers(info)
        info.issues_checked = format_time(now)
        prefix = f"{info.full_name}#"
        if listed is None:  # unchanged since the last check: nothing deleted or moved
            yield self.page([])
            return
        numbers, info.issue_list_etags = listed
        yield replace(
            self.page([], fetched=0),
            enumeration_started=[Scope(prefix)],
            seen=[f"{prefix}{n}" for n in numbers],
            enumeration_completed=[prefix],
        )

    async def _issue_numbers(
        self, info: RepoInfo
    ) -> tuple[list[int], list[tuple[str, str]]] | None:
        """Every issue and PR number of the repository with the new ETags; None when every
        page answered 304 (or the listing was refused: 409/422, logged)."""
        params = {
            "state": "all",
            "sort": "created",
            "direction": "asc",
            "per_page": self.settings.github_page_size,
        }
        url = self.client.url(f"/repos/{info.full_name}/issues", params)
        for conditional in (True, False):
            numbers: list[int] = []
            etags: list[tuple[str, str]] = []
            pages = unchanged = 0
            async for page in self.client.listing(
                url,
                endpoint="repo_issues_check",
                etags=info.issue_list_etags if conditional else None,
            ):
                if not page.ok:
                    self._listing_error(page.reply, "repo_issues_check", info.full_name)
                    return None
                pages += 1
                if page.etag:
                    etags.append((page.url, page.etag))
                if page.items is None:
                    unchanged += 1
                    continue
                for item in page.items:
                    number = item.get("number") if isinstance(item, Mapping) else None
                    if isinstance(number, int) and not isinstance(number, bool):
                        numbers.append(number)
            if unchanged == pages:
                return None
            if unchanged == 0:
                return numbers, etags
        raise AssertionError("unreachable")  # pragma: no cover

    async def _walk(
        self,
        url: str,
        endpoint: str,
        etags: list[tuple[str, str]],
        *,
        repo: str | None = None,
    ) -> _Walk | None:
        """Read a whole listing. All pages 304 → `changed` False. A mix of 304 and 200 pages
        is read again without ETags (the 304 pages' items are needed). None = the listing
        answered 409/422 (logged). Raises `_RepoGone` for 403/404 of a repository listing."""
        for conditional in (True, False):
            items: list[Any] = []
            new_etags: list[tuple[str, str]] = []
            pages = unchanged = 0
            async for page in self.client.listing(
                url, endpoint=endpoint, etags=etags if conditional else None
            ):
                if not page.ok:
                    self._listing_error(page.reply, endpoint, repo)
                    return None
                pages += 1
                if page.items is None:
                    unchanged += 1
                else:
                    items.extend(page.items)
                if page.etag:
                    new_etags.append((page.url, page.etag))
            if unchanged == 0 or unchanged == pages:
                return _Walk(items, new_etags, pages, changed=unchanged == 0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _listing_error(self, reply: Reply, endpoint: str, repo: str | None) -> None:
        if reply.status in (409, 422):
            self.log.warning(
                "github listing skipped",
                endpoint=endpoint,
                repo=repo,
                status=reply.status,
                reason=_message(reply),
            )
            return
        if repo is not None and reply.status in GONE:
            raise _RepoGone(repo, reply)
        raise api_error("github", endpoint, reply.response)

    # --- commits -----------------------------------------------------------------------------
    async def _commits(self, info: RepoInfo) -> AsyncIterator[SyncPage]:
        """The person's new commits on the default branch (see `sync.py` for the walk)."""
        begun = info.head is not None or info.commits.since is not None
        if begun and info.commits_pushed_at == info.pushed_at:
            return
        head = await self._branch_head(info)
        if head is not None:
            sha, etag = head
            if info.head is None:
                since = info.commits.since or format_time(self.floor)
                async for page in self._commits_since(info, sha, since):
                    yield page
            elif sha != info.head:
                async for page in self._commits_between(info, info.head, sha):
                    yield page
            info.head, info.head_etag = sha, etag
            info.commits = StreamCursor()
        info.commits_pushed_at = self._settled(info.pushed_at)
        yield self.page([])

    async def _branch_head(self, info: RepoInfo) -> tuple[str, str | None] | None:
        """The default branch's head sha and ETag; None when unchanged since `info.head`
        (a 304, free) or when there is nothing to walk (empty repository: 409, logged)."""
        url = self.client.url(
            f"/repos/{info.full_name}/commits", {"sha": info.branch, "per_page": 1}
        )
        etag = info.head_etag if info.head else None
        reply = await self.client.get(url, endpoint="commits", etag=etag)
        if reply.not_modified:
            return None
        if reply.status != 200 or not isinstance(reply.data, list):
            self._listing_error(reply, "commits", info.full_name)
            return None
        if not reply.data:
            return None
        first = reply.data[0]
        sha = first.get("sha") if isinstance(first, Mapping) else None
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            raise PermanentError(f"github commits of {info.full_name}: no commit sha in the answer")
        return sha, reply.etag

    async def _commits_between(self, info: RepoInfo, old: str, new: str) -> AsyncIterator[SyncPage]:
        """Commits reachable from `new` and not from `old` (a force-push included: GitHub
        compares from the merge base), through `compare/{old}...{new}`; a comparison GitHub
        cannot make (the old head was garbage-collected, no common ancestor) or one longer
        than `MAX_COMPARE_PAGES` pages gets the bounded re-walk instead. When the new head
        does not descend from the old one (a force-push, a reset), the person's commits only
        the old head had are deleted (`_commits_dropped`)."""
        rewritten = False
        url: str | None = self.client.url(
            f"/repos/{info.full_name}/compare/{old}...{new}",
            {"per_page": self.settings.github_page_size},
        )
        listed: list[Mapping[str, Any]] = []
        pages = 0
        while url is not None:
            reply = await self.client.get(url, endpoint="compare")
            pages += 1
            if reply.status in (404, 422):
                # The old head is unknown (garbage-collected) or shares no history with the
                # new one; a repository that vanished answers 404 to the re-walk as well.
                self.log.warning(
                    "github branch rewritten; re-walking recent commits",
                    repo=info.full_name,
                    status=reply.status,
                    reason=_message(reply),
                )
                async for page in self._commits_since(info, new, self._rewalk_since(info)):
                    yield page
                return
            if reply.status != 200 or not isinstance(reply.data, Mapping):
                self._listing_error(reply, "compare", info.full_name)
                return
            data = reply.data
            if pages == 1:
                rewritten = data.get("status") in ("diverged", "behind")
                if data.get("status") in ("identical", "behind"):
                    if rewritten:
                        async for page in self._commits_dropped(info, old, new, set()):
                            yield page
                    return
                total = data.get("total_commits")
                if (
                    isinstance(total, int)
                    and total > MAX_COMPARE_PAGES * self.settings.github_page_size
                ):
                    url = None
                    listed = []
                    break
            listed.extend(c for c in data.get("commits") or [] if isinstance(c, Mapping))
            url = reply.next_url
            if url is not None and pages >= MAX_COMPARE_PAGES:
                listed = []
                break
        else:
            async for page in self._take_commits(info, listed):
                yield page
            if rewritten:
                kept = {str(c.get("sha")) for c in listed}
                async for page in self._commits_dropped(info, old, new, kept):
                    yield page
            return
        self.log.warning(
            "github comparison too long; re-walking recent commits", repo=info.full_name
        )
        async for page in self._commits_since(info, new, self._rewalk_since(info)):
            yield page
        if rewritten:
            async for page in self._commits_dropped(info, old, new, set()):
                yield page

    async def _commits_dropped(
        self, info: RepoInfo, old: str, new: str, kept: set[str]
    ) -> AsyncIterator[SyncPage]:
        """The person's commits a force-push (or a reset) took off the branch: reachable from
        the old head and not from the new one, `compare/{new}...{old}` (GitHub lists the
        commits of its head side past the merge base), less any the forward comparison listed
        (`kept`: a history with several merge bases). Their records are deleted: what the user
        rewrote out of the branch leaves the memory too. At most `MAX_COMPARE_PAGES` pages; a
        longer or impossible comparison deletes nothing and says so."""
        url: str | None = self.client.url(
            f"/repos/{info.full_name}/compare/{new}...{old}",
            {"per_page": self.settings.github_page_size},
        )
        login = (self.state.login or "").lower()
        dropped: list[str] = []
        pages = 0
        while url is not None:
            if pages >= MAX_COMPARE_PAGES:
                self.log.warning(
                    "github commits removed by a force-push not deleted: too many to list",
                    repo=info.full_name,
                    pages=pages,
                )
                return
            reply = await self.client.get(url, endpoint="compare")
            pages += 1
            if reply.status != 200 or not isinstance(reply.data, Mapping):
                self.log.warning(
                    "github commits removed by a force-push not deleted: the old head "
                    "cannot be compared",
                    repo=info.full_name,
                    status=reply.status,
                    reason=_message(reply),
                )
                return
            for commit in reply.data.get("commits") or []:
                if not isinstance(commit, Mapping):
                    continue
                sha = str(commit.get("sha") or "")
                if _SHA.fullmatch(sha) and _author_login(commit) == login and sha not in kept:
                    dropped.append(sha)
            url = reply.next_url
        if dropped:
            self.log.info(
                "github commits removed by a force-push deleted",
                repo=info.full_name,
                commits=len(dropped),
            )
            page = self.page([], fetched=0)
            yield replace(page, deletes=[f"{info.full_name}@{sha}" for sha in dropped])

    def _rewalk_since(self, info: RepoInfo) -> str:
        """Where a re-walk by date starts: its own checkpoint, else `REWALK_WINDOW` back
        (never before the backfill floor)."""
        floor = max(self.floor, self.ctx.clock.now() - REWALK_WINDOW)
        return info.commits.since or format_time(floor)

    async def _take_commits(
        self, info: RepoInfo, listed: list[Mapping[str, Any]]
    ) -> AsyncIterator[SyncPage]:
        """The person's commits of a comparison, oldest first, in chunks; `seen` remembers
        those taken so a deferred walk resumes without refetching them."""
        login = (self.state.login or "").lower()
        start = info.commits
        todo = sorted(
            (
                c
                for c in listed
                if _author_login(c) == login and start.is_new(str(c.get("sha")), _commit_date(c))
            ),
            key=lambda c: (_commit_date(c), str(c.get("sha"))),
        )
        taken = dict(start.seen)
        first = 0
        while first < len(todo):
            self._check_budget()
            chunk = todo[first : first + self._chunk_size()]
            first += len(chunk)
            records = _kept(await _all(self._commit_record(info, c) for c in chunk))
            taken.update((str(c["sha"]), _commit_date(c)) for c in chunk)
            info.commits = StreamCursor(since=start.since, seen=dict(taken))
            yield self.page(records)

    async def _commits_since(
        self, info: RepoInfo, head: str, since: str
    ) -> AsyncIterator[SyncPage]:
        """The person's commits reachable from `head` committed at or after `since` (the first
        walk back to the backfill floor, and the bounded re-walk)."""
        start = info.commits
        etags = start.etags if since == start.since else []
        while True:
            params = {
                "sha": head,
                "author": self.state.login,
                "since": since,
                "per_page": self.settings.github_page_size,
            }
            url = self.client.url(f"/repos/{info.full_name}/commits", params)
            walk = await self._walk(url, "commits", etags, repo=info.full_name)
            if walk is None or not walk.changed:
                # Unchanged, or empty repository (409) / refused query (422): nothing to take.
                return
            fresh = {str(c["sha"]): _commit_date(c) for c in walk.items}
            todo = sorted(
                (c for c in walk.items if start.is_new(str(c["sha"]), fresh[str(c["sha"])])),
                key=lambda c: (_commit_date(c), str(c["sha"])),
            )
            first = 0
            while first < len(todo):
                self._check_budget()
                chunk = todo[first : first + self._chunk_size()]
                first += len(chunk)
                records = _kept(await _all(self._commit_record(info, c) for c in chunk))
                # Oldest first: everything committed before `last` has been taken.
                last = _commit_date(chunk[-1])
                info.commits = StreamCursor(
                    since=last,
                    seen={str(c["sha"]): last for c in todo[:first] if _commit_date(c) == last},
                )
                yield self.page(records)
            latest = newest(fresh.values())
            moved = (
                start.advanced(latest, fresh, COMMIT_LOOKBACK)
                if latest and walk.pages > 1
                else None
            )
            if moved is None or moved.since == since:
                info.commits = StreamCursor(since=since, seen=fresh, etags=walk.etags)
                yield self.page([])
                return
            info.commits = start = moved
            since, etags = moved.since or since, []

    async def _commit_record(
        self, info: RepoInfo, commit: Mapping[str, Any]
    ) -> MemoryRecord | None:
        sha = str(commit["sha"])
        url: str | None = self.client.url(f"/repos/{info.full_name}/commits/{sha}")
        files: list[Any] | None = []
        detail: Mapping[str, Any] = commit
        pages = 0
        while url is not None and pages < MAX_FILE_PAGES:
            reply = await self.client.get(url, endpoint="commit")
            pages += 1
            if reply.status != 200 or not isinstance(reply.data, Mapping):
                if reply.status in (404, 409, 422) or (reply.status in GONE and pages > 1):
                    self.log.warning(
                        "github commit details unavailable",
                        repo=info.full_name,
                        sha=sha,
                        status=reply.status,
                    )
                    files = None if pages == 1 else files
                    break
                if reply.status in GONE:
                    raise _RepoGone(info.full_name, reply)
                raise api_error("github", "commit", reply.response)
            if pages == 1:
                detail = reply.data
            if files is not None:
                files.extend(reply.data.get("files") or [])
            url = reply.next_url
        # Off the event loop, in the item's time budget; a commit that cannot be transformed
        # is skipped and counted, the sync goes on.
        return await self.ctx.items.run(
            f"{info.full_name}@{sha}",
            partial(
                commit_record,
                user_id=self.ctx.user_id,
                repo=info.full_name,
                commit=detail,
                files=files,
                patch_budget=self.settings.github_patch_budget_bytes,
                branch=info.branch,
            ),
        )

    # --- issues and pull requests --------------------------------------------------------------
    async def _repo_issues(self, info: RepoInfo) -> AsyncIterator[SyncPage]:
        def store(cursor: StreamCursor) -> None:
            info.issues = cursor

        async for page in self._issue_stream(
            path=f"/repos/{info.full_name}/issues",
            extra={},
            endpoint="repo_issues",
            get_cursor=lambda: info.issues,
            set_cursor=store,
            repo=info.full_name,
        ):
            yield page

    async def _user_issues(self) -> AsyncIterator[SyncPage]:
        """`GET /issues` once per filter: by default what the person takes part in (their own
        repositories' issues come from `_repo_issues`); `filter=all` only when configured."""
        filters = ISSUE_FILTERS[self.settings.github_issues_filter]
        # One set of repository-wide listings for every filter: the same issues come back
        # under several filters, and an index vouches for an item whatever listed it.
        conversations = Conversations(self.client, self.settings.github_page_size)
        for name in list(self.state.issues):
            if name not in filters:
                del self.state.issues[name]
        for name in filters:

            def load(name: str = name) -> StreamCursor:
                return self.state.issues.get(name) or StreamCursor()

            def store(cursor: StreamCursor, name: str = name) -> None:
                self.state.issues[name] = cursor

            async for page in self._issue_stream(
                path="/issues",
                extra={"filter": name},
                endpoint="issues",
                get_cursor=load,
                set_cursor=store,
                repo=None,
                conversations=conversations,
            ):
                yield page

    async def _issue_stream(
        self,
        *,
        path: str,
        extra: Mapping[str, str],
        endpoint: str,
        get_cursor: Callable[[], StreamCursor],
        set_cursor: Callable[[StreamCursor], None],
        repo: str | None,
        conversations: Conversations | None = None,
    ) -> AsyncIterator[SyncPage]:
        """A listing sorted by `updated` ascending, walked by keyset: each request asks
        `since` = the last `updated_at` read (less a second: GitHub's `since` may be inclusive
        or not), so an item updated mid-walk (it moves to the end, and every item behind it
        shifts by one) cannot make a page boundary skip another. Only a full page of items
        sharing one `updated_at` is followed by its `Link: rel="next"`. Pages are yielded as
        read, the cursor following the last item taken; the overlap re-reads a few items,
        which `seen` and `taken` keep from being fetched again."""
        start = get_cursor()
        since = start.since or format_time(self.floor)
        etags = dict(start.etags) if since == start.since else {}
        if conversations is None:
            conversations = Conversations(self.client, self.settings.github_page_size)

        def first_url(since: str) -> str:
            params = {
                **extra,
                "state": "all",
                "sort": "updated",
                "direction": "asc",
                "since": since,
                "per_page": self.settings.github_page_size,
            }
            return self.client.url(path, params)

        while True:
            url: str | None = first_url(since)
            fresh: dict[str, str] = {}
            requests = 0
            previous_last: str | None = None
            new_etags: list[tuple[str, str]] = []
            while url is not None:
                reply = await self.client.get(url, endpoint=endpoint, etag=etags.get(url))
                requests += 1
                if reply.not_modified:
                    return  # the stored URL answered 304: nothing changed
                if reply.status != 200 or not isinstance(reply.data, list):
                    self._listing_error(reply, endpoint, repo)
                    return
                if reply.etag:
                    new_etags = [(url, reply.etag)]
                items = [i for i in reply.data if isinstance(i, Mapping)]
                for item in items:
                    fresh[_issue_key(item, repo)] = str(item.get("updated_at"))
                self._check_budget()
                todo = [i for i in items if self._wanted(i, repo, start)]
                await conversations.prepare(
                    [(repo or _repo_of(i) or "", i) for i in todo],
                    parse_time(since) or self.floor,
                )
                records = _kept(
                    await _all(self._issue_record(i, repo, conversations) for i in todo)
                )
                last = str(items[-1].get("updated_at")) if items else None
                if last is not None:
                    # Ascending order: everything updated before `last` has been read.
                    set_cursor(
                        StreamCursor(since=last, seen={k: v for k, v in fresh.items() if v == last})
                    )
                yield self.page(records, fetched=len(items))
                url = _keyset_next(reply, last, previous_last, first_url)
                previous_last = last
            latest = newest(fresh.values())
            moved = start.advanced(latest, fresh) if latest and requests > 1 else None
            if moved is None or moved.since == since:
                # One request (or a window that cannot shrink): ask the same URL next time.
                set_cursor(
                    StreamCursor(since=since, seen=fresh, etags=new_etags if requests == 1 else [])
                )
                yield self.page([])
                return
            set_cursor(moved)
            start = moved
            since, etags = moved.since or since, {}

    def _wanted(self, item: Mapping[str, Any], repo: str | None, cursor: StreamCursor) -> bool:
        full = repo or _repo_of(item)
        if full is None:
            return False
        if repo is None and not repo_selected(
            full, self.settings.github_repos_allow, self.settings.github_repos_deny
        ):
            return False
        key = _issue_key(item, repo)
        stamp = str(item.get("updated_at"))
        source_id = f"{full}#{item.get('number')}"
        if not cursor.is_new(key, stamp) or self.taken.get(source_id) == stamp:
            return False
        self.taken[source_id] = stamp
        return True

    async def _issue_record(
        self, item: Mapping[str, Any], repo: str | None, conversations: Conversations
    ) -> MemoryRecord | None:
        full = repo or _repo_of(item) or ""
        number = int(item["number"])
        base = f"/repos/{full}"
        is_pull = item.get("pull_request") is not None
        pull: Mapping[str, Any] | None = conversations.pull(full, item) if is_pull else None
        if is_pull and pull is None:
            reply = await self.client.get(
                self.client.url(f"{base}/pulls/{number}"), endpoint="pull"
            )
            if reply.status == 200 and isinstance(reply.data, Mapping):
                pull = reply.data
            elif reply.status in (*GONE, 422):
                self.log.warning(
                    "github pull request details unavailable",
                    repo=full,
                    number=number,
                    status=reply.status,
                )
            else:
                raise api_error("github", "pull", reply.response)
        comments: list[Mapping[str, Any]] = []
        if int(item.get("comments") or 0) > 0:
            comments = list(
                conversations.answer(full, "comments", item) or []
            ) or await self._collect(f"{base}/issues/{number}/comments", "issue_comments")
        reviews: list[Mapping[str, Any]] = []
        if pull is not None:
            known = conversations.answer(full, "reviews", item)
            if known is not None:
                reviews = list(known)
            elif "review_comments" not in pull or int(pull.get("review_comments") or 0) > 0:
                # The list form of a PR has no count: ask its review comments.
                reviews = await self._collect(f"{base}/pulls/{number}/comments", "pull_comments")
        return await self.ctx.items.run(
            f"{full}#{number}",
            partial(
                issue_record,
                user_id=self.ctx.user_id,
                repo=full,
                issue=item,
                pull=pull,
                comments=comments,
                review_comments=reviews,
            ),
        )

    async def _collect(self, path: str, endpoint: str) -> list[Mapping[str, Any]]:
        """Every item of a small listing (comments); an inaccessible one reads as empty."""
        out: list[Mapping[str, Any]] = []
        url = self.client.url(path, {"per_page": self.settings.github_page_size})
        async for page in self.client.listing(url, endpoint=endpoint):
            if not page.ok:
                if page.reply.status in (*GONE, 409, 422):
                    self.log.warning(
                        "github listing unavailable", endpoint=endpoint, status=page.reply.status
                    )
                    return out
                raise api_error("github", endpoint, page.reply.response)
            out.extend(i for i in page.items or [] if isinstance(i, Mapping))
        return out


def _keyset_next(
    reply: Reply, last: str | None, previous: str | None, first_url: Callable[[str], str]
) -> str | None:
    """The next request of a keyset walk: none after the last page; the `Link` next URL while
    a full page holds one `updated_at` only (no progress by `since`); else `since` = the last
    `updated_at` less a second."""
    if reply.next_url is None or last is None:
        return None
    when = parse_time(last)
    if when is None or last == previous:
        return reply.next_url
    return first_url(format_time(when - timedelta(seconds=1)))


def _kept(records: Iterable[MemoryRecord | None]) -> list[MemoryRecord]:
    """The records of the items that could be transformed (the others were counted)."""
    return [record for record in records if record is not None]


def _author_login(commit: Mapping[str, Any]) -> str:
    """The lower-cased login of a listed commit's GitHub author ('' when it has none: an
    author email GitHub matched to no account)."""
    author = commit.get("author")
    return str(author.get("login") or "").lower() if isinstance(author, Mapping) else ""


def _commit_date(commit: Mapping[str, Any]) -> str:
    inner = commit.get("commit") or {}
    return str(
        (inner.get("committer") or {}).get("date") or (inner.get("author") or {}).get("date")
    )


def _repo_of(item: Mapping[str, Any]) -> str | None:
    repository = item.get("repository")
    if isinstance(repository, Mapping) and repository.get("full_name"):
        return str(repository["full_name"])
    url = str(item.get("repository_url") or "")
    if "/repos/" in url:
        return url.split("/repos/", 1)[1].strip("/")
    return None


def _issue_key(item: Mapping[str, Any], repo: str | None) -> str:
    return str(item.get("number")) if repo else f"{_repo_of(item)}#{item.get('number')}"


def _message(reply: Reply) -> str:
    data = reply.data
    return str(data.get("message", "")) if isinstance(data, Mapping) else ""
