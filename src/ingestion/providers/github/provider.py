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
4. `GET /issues?filter=all&state=all` updated since the cursor (issues and PRs the person can
   see, created, was assigned, mentioned in or commented on), within the allow/deny globs;
5. the conversation of the issues and PRs of one listing page comes from repository-wide
   listings where they are cheaper (`conversations.py`: `/pulls` for merged/draft/refs,
   `/issues/comments`, `/pulls/comments`), else per item: `/pulls/{n}` for a PR, and its
   comment listings (issue comments only when the `comments` count says there are some).

Guarantees: pages are yielded oldest-first within a stream with a complete state, so a
deferral (`RateLimited` at the primary-limit reset or before the reserve is spent) resumes
without duplicates; an unchanged account costs only 304s; a repository answering 404/403 (not a
rate limit) is skipped with a warning and keeps its cursor; 409 (empty repository) and 422 skip
one stream, never the whole sync; 401 goes through the token service (then `ReauthRequired`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, TypeVar

from ingestion.config import Settings
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import SyncContext, SyncPage
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
#: A repository answering these to a repository-level call is skipped, cursor kept.
GONE = (403, 404, 410, 451)


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
        return SyncPage(
            state=self.state.dump(),
            upserts=records,
            fetched=len(records) if fetched is None else fetched,
            stats=stats,
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
            except _RepoGone as gone:
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
        for info in self.state.repos.values():
            info.listed = info.full_name in listed
        for name, repo in listed.items():
            info = self.state.repos.get(name) or RepoInfo(full_name=name)
            info.branch = str(repo.get("default_branch") or "main")
            info.pushed_at = repo.get("pushed_at")
            info.own = (repo.get("owner") or {}).get("login") == self.state.login
            info.listed = True
            self.state.repos[name] = info
        self.state.repos_etags = walk.etags

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
        start = info.commits
        if start.since is not None and info.commits_pushed_at == info.pushed_at:
            return
        since = start.since or format_time(self.floor)
        etags = start.etags if since == start.since else []
        while True:
            params = {
                "sha": info.branch,
                "author": self.state.login,
                "since": since,
                "per_page": self.settings.github_page_size,
            }
            url = self.client.url(f"/repos/{info.full_name}/commits", params)
            walk = await self._walk(url, "commits", etags, repo=info.full_name)
            if walk is None or not walk.changed:
                # Unchanged, or empty repository (409) / refused query (422): nothing to take.
                info.commits_pushed_at = self._settled(info.pushed_at)
                yield self.page([])
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
                # One page (or a window that cannot shrink): ask the same URL next time.
                info.commits = StreamCursor(since=since, seen=fresh, etags=walk.etags)
                info.commits_pushed_at = self._settled(info.pushed_at)
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
        def store(cursor: StreamCursor) -> None:
            self.state.issues = cursor

        async for page in self._issue_stream(
            path="/issues",
            extra={"filter": "all"},
            endpoint="issues",
            get_cursor=lambda: self.state.issues,
            set_cursor=store,
            repo=None,
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
    ) -> AsyncIterator[SyncPage]:
        """A listing sorted by `updated` ascending: pages are yielded as read, the cursor
        following the last item taken."""
        start = get_cursor()
        since = start.since or format_time(self.floor)
        etags = start.etags if since == start.since else []
        conversations = Conversations(self.client, self.settings.github_page_size)
        while True:
            params = {
                **extra,
                "state": "all",
                "sort": "updated",
                "direction": "asc",
                "since": since,
                "per_page": self.settings.github_page_size,
            }
            url = self.client.url(path, params)
            fresh: dict[str, str] = {}
            pages = unchanged = 0
            new_etags: list[tuple[str, str]] = []
            async for page in self.client.listing(url, endpoint=endpoint, etags=etags):
                if not page.ok:
                    self._listing_error(page.reply, endpoint, repo)
                    return
                pages += 1
                if page.etag:
                    new_etags.append((page.url, page.etag))
                if page.items is None:
                    unchanged += 1
                    continue
                items = [i for i in page.items if isinstance(i, Mapping)]
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
                if items:
                    # Ascending order: everything updated before `last` has been read.
                    last = str(items[-1].get("updated_at"))
                    set_cursor(
                        StreamCursor(since=last, seen={k: v for k, v in fresh.items() if v == last})
                    )
                yield self.page(records, fetched=len(items))
            if unchanged == pages:
                return
            latest = newest(fresh.values())
            moved = start.advanced(latest, fresh) if latest and pages > 1 else None
            if moved is None or moved.since == since:
                # One page (or a window that cannot shrink): ask the same URL next time.
                set_cursor(StreamCursor(since=since, seen=fresh, etags=new_etags))
                yield self.page([])
                return
            set_cursor(moved)
            start = moved
            since, etags = moved.since or since, []

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


def _kept(records: Iterable[MemoryRecord | None]) -> list[MemoryRecord]:
    """The records of the items that could be transformed (the others were counted)."""
    return [record for record in records if record is not None]


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
