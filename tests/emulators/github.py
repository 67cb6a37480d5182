"""A faithful local emulator of the GitHub REST API (the parts the GitHub provider calls).

Shapes follow GitHub's OpenAPI description (npm `@octokit/openapi`, `components/examples`) and
recorded traffic (npm `@octokit/fixtures`); the payload builders live in `github_payloads.py`
and `tests/test_github_emulator.py` checks their keys.

What it does like github.com (and GitHub Enterprise Server under `path_prefix="/api/v3"`):

- `Authorization: Bearer T` or `token T`; a token not in `state.tokens` → 401
  `{"message": "Bad credentials", "documentation_url": …}`.
- `Link` pagination with `per_page` (default 30, max 100) and `page`; "next" links of
  repository listings point at `/repositories/{id}/…` like the real service.
- strong `ETag`s over the body and the token (an ETag is bound to the token that received
  it); `If-None-Match` with a current ETag of the same token → 304 with no body, which does not
  count against the rate limit (`x-ratelimit-remaining` unchanged).
- `x-ratelimit-limit/-remaining/-used/-reset/-resource` per user; at zero → 403 "API rate limit
  exceeded" with `x-ratelimit-remaining: 0` until `reset`.
- secondary limits on demand (`secondary_limit_requests`): 403 "You have exceeded a secondary
  rate limit…" with `retry-after` when `secondary_retry_after` is set.
- repositories that are deleted (404), blocked (403) or empty (409 on commits).
- issues transferred to another repository of the same owner (`transfer_issue`): gone from the
  source's listings, a new number and id in the target, and `GET /repos/{o}/{r}/issues/{n}` of
  the old location answers 301 Moved Permanently to the new one; a deleted issue
  (`delete_issue`) answers 410 Gone. Source: GitHub REST reference, "Get an issue" ("returns a
  301 Moved Permanently status if the issue was transferred to another repository ... 410 Gone
  status if the issue was deleted from a repository where the authenticated user has read
  access"), and "Transferring an issue to another repository" (same owner only; ids change,
  as reported in GoogleCloudPlatform/repo-automation-playground#85).
- a commit graph: `commits?sha=` lists what is reachable from a branch or sha (by commit
  date, newest first), `compare/{base}...{head}` answers as GitHub does (see `compare`);
  scripted pushes of old-dated commits (`add_commit(date=…)`), merges of side branches
  (`branch`, `merge`) and force-pushes (`force_push`, optionally garbage-collecting).
- repository-wide listings: `/repos/{o}/{r}/pulls` (`state`, `base`, `sort` created | updated |
  popularity | long-running, `direction` defaulting to desc for created and asc otherwise) in
  the list form without counts or `merged`; `/repos/{o}/{r}/issues/comments` and
  `/repos/{o}/{r}/pulls/comments` (`since` = updated at or after, `sort` created | updated,
  `direction` ignored without `sort`; by default ascending ids).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators.github_payloads import (
    comment_payload,
    commit_payload,
    file_payload,
    issue_payload,
    private_user,
    pull_payload,
    pull_simple_payload,
    repo_payload,
    review_comment_payload,
)

__all__ = [
    "ABUSE_MESSAGE",
    "GhComment",
    "GhCommit",
    "GhFile",
    "GhIssue",
    "GhRepo",
    "GitHubState",
    "LoggedRequest",
    "create_app",
    "seed_activity",
]

API = "https://api.github.com"
DOCS = "https://docs.github.com/rest"
_ids = itertools.count(1000)
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID "
    "0000:0000:0000000:0000000:00000000."
)
#: What GitHub Enterprise Server before 3.x (and github.com before 2021) said for the same
#: limit, with `retry-after`: the wording quoted in public reports (octokit/plugin-throttling
#: matched `/\babuse\b/i` for it; renovatebot/renovate's GitHub client starts-with matched it).
ABUSE_MESSAGE = (
    "You have triggered an abuse detection mechanism. Please wait a few minutes before you "
    "try again."
)
PRIMARY_MESSAGE = (
    "API rate limit exceeded for user ID {id}. If you reach out to GitHub Support for help, "
    "please include the request ID 0000:0000:0000000:0000000:00000000."
)


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class GhFile:
    filename: str
    status: str = "modified"
    additions: int = 1
    deletions: int = 0
    #: None for binary files (GitHub omits `patch`).
    patch: str | None = "@@ -1 +1 @@\n-old\n+new"


@dataclass
class GhCommit:
    sha: str
    message: str
    author_login: str | None
    date: datetime
    author_name: str = "Mona Lisa"
    author_email: str = "mona@example.com"
    files: list[GhFile] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)


@dataclass
class GhComment:
    id: int
    user: str
    body: str
    created_at: datetime
    updated_at: datetime
    #: Review comments only: file and line.
    path: str | None = None
    line: int | None = None


@dataclass
class GhIssue:
    number: int
    title: str
    body: str | None
    user: str
    created_at: datetime
    updated_at: datetime
    state: str = "open"
    closed_at: datetime | None = None
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    comments: list[GhComment] = field(default_factory=list)
    #: Pull requests only.
    is_pull: bool = False
    draft: bool = False
    merged_at: datetime | None = None
    base_ref: str = "main"
    head_ref: str = "feature"
    review_comments: list[GhComment] = field(default_factory=list)


@dataclass
class GhRepo:
    owner: str
    name: str
    id: int = field(default_factory=lambda: next(_ids))
    private: bool = False
    default_branch: str = "main"
    created_at: datetime = field(default_factory=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    pushed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    collaborators: set[str] = field(default_factory=set)
    #: Organisation members who see the repository through the organisation.
    org_members: set[str] = field(default_factory=set)
    #: The default branch's history (every commit reachable from `head`), newest first by
    #: commit date, as `git log` and the commits listing order it.
    commits: list[GhCommit] = field(default_factory=list)
    #: Every commit the repository knows, reachable or not (GitHub keeps a force-pushed-away
    #: commit answerable by sha until it is garbage-collected).
    objects: dict[str, GhCommit] = field(default_factory=dict)
    #: The default branch's head sha.
    head: str | None = None
    issues: dict[int, GhIssue] = field(default_factory=dict)
    deleted: bool = False
    blocked: bool = False
    #: Deleted a moment ago: still in `/user/repos` (listings lag), 404 everywhere else.
    vanishing: bool = False
    #: Issues transferred away: old number → (target repository, new number).
    moved: dict[int, tuple[str, int]] = field(default_factory=dict)
    #: Numbers of deleted issues (410 Gone).
    removed_issues: set[int] = field(default_factory=set)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def visible_to(self, login: str) -> bool:
        return login == self.owner or login in self.collaborators or login in self.org_members

    def affiliation_of(self, login: str) -> str | None:
        if login == self.owner:
            return "owner"
        if login in self.collaborators:
            return "collaborator"
        if login in self.org_members:
            return "organization_member"
        return None


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int
    user: str | None
    if_none_match: str | None


@dataclass
class RateWindow:
    limit: int
    remaining: int
    reset: int

    @property
    def used(self) -> int:
        return self.limit - self.remaining


class GitHubState:
    """Everything the emulator serves; tests script it directly (it is shared with the server
    thread: mutate it between requests, not during)."""

    def __init__(
        self,
        *,
        path_prefix: str = "",
        html_base: str = "https://github.com",
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path_prefix = path_prefix.rstrip("/")
        self.html_base = html_base
        self.rate_limit = rate_limit
        self.clock = clock
        self.users: dict[str, dict[str, Any]] = {}
        self.repos: dict[str, GhRepo] = {}
        #: access token → user login.
        self.tokens: dict[str, str] = {}
        self.windows: dict[str, RateWindow] = {}
        self.log: list[LoggedRequest] = []
        #: The next N requests get a secondary rate limit answer.
        self.secondary_limit_requests = 0
        self.secondary_retry_after: int | None = 1
        #: The message of those answers (`ABUSE_MESSAGE` for older Enterprise servers), and a
        #: path pattern limiting them to some endpoints (None = any request).
        self.secondary_message = SECONDARY_MESSAGE
        self.secondary_limit_path: str | None = None
        self.commit_files_per_page = 300
        #: Repository issue listings page with `after` cursors (GitHub since 2025) instead of
        #: `page` numbers (as recorded in 2017 by @octokit/fixtures).
        self.issue_cursor_pagination = True
        self.payload_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
        #: Called with (path, query) before a request is answered: a test changes the data
        #: mid-walk (an issue updated while its listing is being paged moves, and the items
        #: behind it shift by one: a walk by page number or offset cursor skips one).
        self.before_request: Callable[[str, str], None] | None = None

    # --- scripting ---------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def add_user(self, login: str, *, token: str | None = None, name: str | None = None) -> str:
        uid = next(_ids)
        self.users[login] = {"login": login, "id": uid, "name": name or login.title()}
        if token:
            self.tokens[token] = login
        return login

    def add_repo(self, owner: str, name: str, **kwargs: Any) -> GhRepo:
        repo = GhRepo(owner=owner, name=name, **kwargs)
        self.repos[repo.full_name] = repo
        return repo

    def add_commit(self, repo: GhRepo, message: str, *, author: str | None, **kw: Any) -> GhCommit:
        """A commit on top of the default branch (its date may be old: local work pushed late)."""
        commit = self.make_commit(
            repo, message, author=author, parents=[repo.head] if repo.head else [], **kw
        )
        repo.head = commit.sha
        repo.commits.insert(0, commit)
        repo.commits.sort(key=lambda c: c.date, reverse=True)
        repo.pushed_at = max(repo.pushed_at, self.now())
        return commit

    def make_commit(
        self, repo: GhRepo, message: str, *, author: str | None, parents: list[str], **kw: Any
    ) -> GhCommit:
        """A commit object only (on no branch until a merge or push makes it reachable)."""
        date = kw.pop("date", None) or self.now()
        sha = _sha(f"{repo.full_name}{message}{date}{len(repo.objects)}")
        commit = GhCommit(
            sha=sha, message=message, author_login=author, date=date, parents=parents, **kw
        )
        repo.objects[sha] = commit
        return commit

    def branch(
        self, repo: GhRepo, base: str, messages: list[str], *, author: str, dates: list[datetime]
    ) -> str:
        """Commits on a side branch from `base` (made on `dates`); returns its tip sha."""
        tip = base
        for message, date in zip(messages, dates, strict=True):
            files = [GhFile(f"feature/{len(repo.objects)}.py")]
            tip = self.make_commit(
                repo, message, author=author, parents=[tip], date=date, files=files
            ).sha
        return tip

    def merge(self, repo: GhRepo, tip: str, *, author: str, message: str = "Merge branch") -> str:
        """A merge commit (parents: the head, then `tip`) becomes the head: the side branch's
        commits, with their old dates, reach the default branch now."""
        merge = self.make_commit(
            repo, message, author=author, parents=[repo.head or tip, tip], files=[]
        )
        self.set_head(repo, merge.sha)
        return merge.sha

    def force_push(self, repo: GhRepo, sha: str, *, forget: bool = False) -> None:
        """Point the default branch at `sha` (history rewritten); `forget` also drops the
        commits no longer reachable (garbage-collected: compare with them answers 404)."""
        self.set_head(repo, sha)
        if forget:
            reachable = {c.sha for c in repo.commits}
            repo.objects = {k: v for k, v in repo.objects.items() if k in reachable}

    def set_head(self, repo: GhRepo, sha: str) -> None:
        repo.head = sha
        repo.commits = sorted(
            (repo.objects[s] for s in self.ancestors(repo, sha)),
            key=lambda c: c.date,
            reverse=True,
        )
        repo.pushed_at = max(repo.pushed_at, self.now())

    @staticmethod
    def log_order(repo: GhRepo, start: str) -> list[GhCommit]:
        """What `git log START` lists (and so the commits listing): a walk from START that
        always takes the newest-dated commit it has reached next; START itself comes first,
        whatever its date (git-rev-list's default order)."""
        out: list[GhCommit] = []
        seen = {start}
        queue = [(0.0, start)] if start in repo.objects else []
        while queue:
            _, sha = heapq.heappop(queue)
            commit = repo.objects[sha]
            out.append(commit)
            for parent in commit.parents:
                if parent in repo.objects and parent not in seen:
                    seen.add(parent)
                    heapq.heappush(queue, (-repo.objects[parent].date.timestamp(), parent))
        return out

    @staticmethod
    def ancestors(repo: GhRepo, sha: str) -> set[str]:
        """`sha` and every commit reachable from it."""
        seen: set[str] = set()
        todo = [sha]
        while todo:
            current = todo.pop()
            if current in seen or current not in repo.objects:
                continue
            seen.add(current)
            todo.extend(repo.objects[current].parents)
        return seen

    def add_issue(self, repo: GhRepo, title: str, *, user: str, **kw: Any) -> GhIssue:
        number = max(repo.issues, default=0) + 1
        created = kw.pop("created_at", None) or self.now()
        issue = GhIssue(
            number=number,
            title=title,
            body=kw.pop("body", f"Body of {title}"),
            user=user,
            created_at=created,
            updated_at=kw.pop("updated_at", created),
            **kw,
        )
        repo.issues[number] = issue
        return issue

    def touch(self, issue: GhIssue) -> None:
        issue.updated_at = max(self.now(), issue.updated_at + timedelta(seconds=1))

    def add_comment(
        self,
        issue: GhIssue,
        user: str,
        body: str,
        *,
        review: bool = False,
        path: str | None = None,
        line: int | None = None,
    ) -> GhComment:
        now = self.now()
        comment = GhComment(
            id=next(_ids),
            user=user,
            body=body,
            created_at=now,
            updated_at=now,
            path=path,
            line=line,
        )
        (issue.review_comments if review else issue.comments).append(comment)
        self.touch(issue)
        return comment

    def transfer_issue(self, issue: GhIssue, source: GhRepo, target: GhRepo) -> GhIssue:
        """Move an issue (not a PR) to another repository of the same owner, as GitHub does:
        it takes the next number there (and so a new id), and the old URL redirects."""
        if issue.is_pull or source.owner != target.owner:
            raise ValueError("only issues move, and only between repositories of one owner")
        del source.issues[issue.number]
        old = issue.number
        issue.number = max(target.issues, default=0) + 1
        target.issues[issue.number] = issue
        source.moved[old] = (target.full_name, issue.number)
        self.touch(issue)
        return issue

    def delete_issue(self, repo: GhRepo, issue: GhIssue) -> None:
        del repo.issues[issue.number]
        repo.removed_issues.add(issue.number)

    def merge_pull(self, issue: GhIssue) -> None:
        self.touch(issue)
        issue.state = "closed"
        issue.merged_at = issue.closed_at = issue.updated_at

    def window(self, login: str) -> RateWindow:
        now = int(self.clock())
        window = self.windows.get(login)
        if window is None or now >= window.reset:
            window = RateWindow(self.rate_limit, self.rate_limit, now + 3600)
            self.windows[login] = window
        return window

    def exhaust(self, login: str, *, reset_in: int = 3600, remaining: int = 0) -> None:
        self.windows[login] = RateWindow(self.rate_limit, remaining, int(self.clock()) + reset_in)

    # --- counters ------------------------------------------------------------------------------
    def count(self, *, status: int | None = None, path: str | None = None) -> int:
        return sum(
            1
            for r in self.log
            if (status is None or r.status == status) and (path is None or re.search(path, r.path))
        )

    @property
    def units_used(self) -> int:
        """Requests that counted against a rate limit (everything but 304s and 401s)."""
        return sum(1 for r in self.log if r.status not in (304, 401) and r.user is not None)


# --- the HTTP layer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """A non-JSON body (diff media types)."""

    text: str
    media_type: str


def _diff(commit: GhCommit) -> str:
    parts = []
    for f in commit.files:
        header = f"diff --git a/{f.filename} b/{f.filename}\n--- a/{f.filename}\n+++ b/{f.filename}"
        body = f.patch if f.patch is not None else f"Binary files differ ({f.filename})"
        parts.append(f"{header}\n{body}\n")
    return "".join(parts)


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _error(status: int, message: str, **extra: Any) -> _Answer:
    return _Answer(JSONResponse({"message": message, "documentation_url": DOCS, **extra}, status))


def _int_param(
    request: Request, name: str, default: int, *, low: int = 1, high: int = 10**9
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return max(low, min(high, int(raw)))
    except ValueError:
        raise _error(422, "Validation Failed") from None


def _since(request: Request) -> datetime | None:
    raw = request.query_params.get("since")
    if not raw:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise _error(422, 'Invalid request.\n\nInvalid value for "since".') from None


class _Handler:
    def __init__(self, state: GitHubState) -> None:
        self.state = state

    def api(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{self.state.path_prefix}"

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise _error(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or token not in self.state.tokens:
            raise _error(401, "Bad credentials")
        return self.state.tokens[token]

    def rate_headers(self, window: RateWindow) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(window.limit),
            "x-ratelimit-remaining": str(window.remaining),
            "x-ratelimit-used": str(window.used),
            "x-ratelimit-reset": str(window.reset),
            "x-ratelimit-resource": "core",
        }

    def repo(self, request: Request, login: str) -> GhRepo:
        params = request.path_params
        if "repo_id" in params:
            found = next(
                (r for r in self.state.repos.values() if str(r.id) == params["repo_id"]), None
            )
        else:
            found = self.state.repos.get(f"{params['owner']}/{params['repo']}")
        hidden = found is None or found.deleted or found.vanishing
        if hidden or not (found.visible_to(login) or not found.private):
            raise _error(404, "Not Found")
        if found.blocked:
            raise _error(
                403,
                "Repository access blocked",
                block={"reason": "tos", "created_at": "2025-01-01T00:00:00Z"},
            )
        return found

    def page(
        self,
        request: Request,
        items: list[Any],
        *,
        default_per_page: int = 30,
        path: str | None = None,
        cursor: bool = False,
    ) -> tuple[list[Any], str | None]:
        per_page = _int_param(request, "per_page", default_per_page, high=100)
        base = f"{self.api(request)}{path or request.url.path.removeprefix(self.state.path_prefix)}"
        if cursor or "after" in request.query_params:
            return self._cursor_page(request, items, per_page, base)
        page = _int_param(request, "page", 1)
        last = max(1, -(-len(items) // per_page))
        chosen = items[(page - 1) * per_page : page * per_page]
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]

        def link(n: int, rel: str) -> str:
            return f'<{base}?{urlencode([*query, ("page", str(n))])}>; rel="{rel}"'

        rels = []
        if page > 1:
            rels.append(link(page - 1, "prev"))
        if page < last:
            rels += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            rels.append(link(1, "first"))
        return chosen, ", ".join(rels) or None

    def _cursor_page(
        self, request: Request, items: list[Any], per_page: int, base: str
    ) -> tuple[list[Any], str | None]:
        """Cursor pagination (`after`), as GitHub now does for repository issue listings."""
        raw = request.query_params.get("after")
        offset = 0
        if raw:
            try:
                offset = int(base64.b64decode(raw).decode().rsplit(":", 1)[1])
            except (ValueError, IndexError):
                raise _error(422, "Invalid cursor") from None
        chosen = items[offset : offset + per_page]
        if offset + per_page >= len(items):
            return chosen, None
        after = base64.b64encode(f"cursor:v2:{offset + per_page}".encode()).decode()
        query = [
            (k, v) for k, v in request.query_params.multi_items() if k not in ("page", "after")
        ]
        return chosen, f'<{base}?{urlencode([*query, ("after", after)])}>; rel="next"'

    async def dispatch(
        self,
        request: Request,
        body: Callable[[Request, str], tuple[Any, str | None]],
        *,
        free: bool = False,
    ) -> Response:
        state = self.state
        login: str | None = None
        status = 500
        if state.before_request is not None:
            state.before_request(request.url.path, request.url.query)
        try:
            login = self.authenticate(request)
            window = state.window(login)
            headers = self.rate_headers(window)
            limited_path = state.secondary_limit_path is None or re.search(
                state.secondary_limit_path, request.url.path
            )
            if state.secondary_limit_requests > 0 and limited_path:
                state.secondary_limit_requests -= 1
                extra = (
                    {}
                    if state.secondary_retry_after is None
                    else {"retry-after": str(state.secondary_retry_after)}
                )
                response: Response = JSONResponse(
                    {
                        "message": state.secondary_message,
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    },
                    403,
                    headers={**headers, **extra},
                )
            elif window.remaining <= 0:
                response = JSONResponse(
                    {
                        "message": PRIMARY_MESSAGE.format(id=state.users[login]["id"]),
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit",
                    },
                    403,
                    headers=headers,
                )
            else:
                try:
                    data, link = body(request, login)
                except _Answer as answer:
                    window.remaining -= 0 if free else 1
                    answer.response.headers.update(self.rate_headers(window))
                    raise
                media_type = "application/json; charset=utf-8"
                if isinstance(data, _Raw):
                    raw, media_type = data.text.encode(), data.media_type
                else:
                    raw = json.dumps(data, separators=(",", ":")).encode()
                # The ETag is bound to the token that asked (GitHub varies on Authorization):
                # after a token change `If-None-Match` gets a 200, not a 304. GitHub Support,
                # quoted in eclipse-csi/otterdog#201: "It's currently expected for ETags to be
                # auth token specific"; bored-engineer/github-conditional-http-transport#6.
                token = request.headers.get("authorization", "").partition(" ")[2]
                etag = f'"{hashlib.sha256(raw + token.encode()).hexdigest()[:40]}"'
                sent = [
                    t.strip().removeprefix("W/")
                    for t in request.headers.get("if-none-match", "").split(",")
                ]
                extra = {
                    "etag": etag,
                    "cache-control": "private, max-age=60, s-maxage=60",
                    "vary": "Accept, Authorization, Cookie, X-GitHub-OTP",
                    "x-github-media-type": "github.v3; format=json",
                    "x-github-api-version-selected": "2022-11-28",
                }
                if link:
                    extra["link"] = link
                if etag in sent:
                    response = Response(status_code=304, headers={**headers, **extra})
                else:
                    window.remaining -= 0 if free else 1
                    response = Response(
                        raw,
                        200,
                        media_type=media_type,
                        headers={**self.rate_headers(window), **extra},
                    )
        except _Answer as answer:
            response = answer.response
        status = response.status_code
        state.log.append(
            LoggedRequest(
                request.method,
                request.url.path,
                request.url.query,
                status,
                login,
                request.headers.get("if-none-match"),
            )
        )
        return response

    # --- endpoints ---------------------------------------------------------------------------
    def rate_limit(self, request: Request, login: str) -> tuple[Any, str | None]:
        window = self.state.window(login)
        core = {
            "limit": window.limit,
            "used": window.used,
            "remaining": window.remaining,
            "reset": window.reset,
        }
        return {"resources": {"core": core}, "rate": core}, None

    def repository(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        return repo_payload(self.state, repo, self.api(request), login), None

    def user(self, request: Request, login: str) -> tuple[Any, str | None]:
        return private_user(self.state, login, self.api(request)), None

    def user_repos(self, request: Request, login: str) -> tuple[Any, str | None]:
        wanted = set(
            (
                request.query_params.get("affiliation") or "owner,collaborator,organization_member"
            ).split(",")
        )
        visibility = request.query_params.get("visibility", "all")
        repos = [
            r
            for r in self.state.repos.values()
            if not r.deleted
            and r.affiliation_of(login) in wanted
            and (visibility == "all" or (visibility == "private") == r.private)
        ]
        sort = request.query_params.get("sort", "full_name")
        key: Callable[[GhRepo], Any] = {
            "created": lambda r: r.created_at,
            "updated": lambda r: r.updated_at,
            "pushed": lambda r: r.pushed_at,
        }.get(sort, lambda r: r.full_name.lower())
        default_dir = "asc" if sort == "full_name" else "desc"
        repos.sort(key=key, reverse=request.query_params.get("direction", default_dir) == "desc")
        chosen, link = self.page(request, repos)
        api = self.api(request)
        return [repo_payload(self.state, r, api, login) for r in chosen], link

    def _filter_issues(
        self, request: Request, pairs: list[tuple[GhRepo, GhIssue]]
    ) -> list[tuple[GhRepo, GhIssue]]:
        state_q = request.query_params.get("state", "open")
        since = _since(request)
        labels = {x for x in (request.query_params.get("labels") or "").split(",") if x}
        out = [
            (r, i)
            for r, i in pairs
            if (state_q == "all" or i.state == state_q)
            and (since is None or i.updated_at >= since)
            and labels <= set(i.labels)
        ]
        sort = request.query_params.get("sort", "created")
        key: Callable[[tuple[GhRepo, GhIssue]], Any] = {
            "updated": lambda p: (p[1].updated_at, p[1].number),
            "comments": lambda p: (len(p[1].comments), p[1].number),
        }.get(sort, lambda p: (p[1].created_at, p[1].number))
        out.sort(key=key, reverse=request.query_params.get("direction", "desc") == "desc")
        return out

    def issues(self, request: Request, login: str) -> tuple[Any, str | None]:
        which = request.query_params.get("filter", "assigned")
        pairs = []
        for repo in self.state.repos.values():
            if repo.deleted or repo.blocked:
                continue
            visible = repo.visible_to(login)
            for issue in repo.issues.values():
                involved = {
                    "assigned": login in issue.assignees,
                    "created": issue.user == login,
                    "mentioned": f"@{login}" in (issue.body or ""),
                    # GitHub subscribes a person who opens, is assigned or comments.
                    "subscribed": issue.user == login
                    or login in issue.assignees
                    or any(c.user == login for c in issue.comments),
                    "repos": visible,
                    "all": visible,
                }.get(which)
                if involved is None:
                    raise _error(422, "Validation Failed")
                if involved and (visible or not repo.private):
                    pairs.append((repo, issue))
        chosen, link = self.page(request, self._filter_issues(request, pairs))
        api = self.api(request)
        return [
            issue_payload(self.state, r, i, api, with_repo=True, login=login) for r, i in chosen
        ], link

    def repo_issues(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        pairs = self._filter_issues(request, [(repo, i) for i in repo.issues.values()])
        chosen, link = self.page(
            request,
            pairs,
            path=f"/repositories/{repo.id}/issues",
            cursor=self.state.issue_cursor_pagination,
        )
        api = self.api(request)
        return [issue_payload(self.state, repo, i, api) for _, i in chosen], link

    def _issue(self, repo: GhRepo, request: Request, *, pull: bool = False) -> GhIssue:
        issue = repo.issues.get(int(request.path_params["number"]))
        if issue is None or (pull and not issue.is_pull):
            raise _error(404, "Not Found")
        return issue

    def issue(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        number = int(request.path_params["number"])
        if number in repo.moved:
            target, new = repo.moved[number]
            location = f"{self.api(request)}/repos/{target}/issues/{new}"
            raise _Answer(
                JSONResponse(
                    {"message": "Moved Permanently", "url": location, "documentation_url": DOCS},
                    301,
                    headers={"location": location},
                )
            )
        if number in repo.removed_issues:
            raise _error(410, "This issue was deleted")
        issue = self._issue(repo, request)
        return issue_payload(self.state, repo, issue, self.api(request)), None

    def issue_comments(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        issue = self._issue(repo, request)
        since = _since(request)
        comments = [c for c in issue.comments if since is None or c.updated_at >= since]
        chosen, link = self.page(
            request, comments, path=f"/repositories/{repo.id}/issues/{issue.number}/comments"
        )
        api = self.api(request)
        return [comment_payload(self.state, repo, issue, c, api) for c in chosen], link

    def pulls(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        state_q = request.query_params.get("state", "open")
        if state_q not in ("open", "closed", "all"):
            raise _error(422, "Validation Failed")
        base = request.query_params.get("base")
        found = [
            i
            for i in repo.issues.values()
            if i.is_pull
            and (state_q == "all" or i.state == state_q)
            and (base is None or i.base_ref == base)
        ]
        sort = request.query_params.get("sort", "created")
        key: Callable[[GhIssue], Any] = {
            "updated": lambda i: (i.updated_at, i.number),
            "popularity": lambda i: (len(i.comments), i.number),
            "long-running": lambda i: (i.created_at, i.number),
        }.get(sort, lambda i: (i.created_at, i.number))
        default_dir = "desc" if sort == "created" else "asc"
        found.sort(key=key, reverse=request.query_params.get("direction", default_dir) == "desc")
        chosen, link = self.page(request, found, path=f"/repositories/{repo.id}/pulls")
        api = self.api(request)
        return [pull_simple_payload(self.state, repo, i, api, login) for i in chosen], link

    def _repo_comments(
        self, request: Request, repo: GhRepo, *, review: bool
    ) -> list[tuple[GhIssue, GhComment]]:
        """Every comment of a repository (`since`, `sort`, `direction` as GitHub reads them)."""
        since = _since(request)
        pairs = [
            (i, c)
            for i in repo.issues.values()
            for c in (i.review_comments if review else i.comments)
            if since is None or c.updated_at >= since
        ]
        sort = request.query_params.get("sort")
        if sort in ("created", "created_at", "updated"):
            field_of: Callable[[GhComment], datetime] = (
                (lambda c: c.updated_at) if sort == "updated" else (lambda c: c.created_at)
            )
            desc = request.query_params.get("direction", "desc") == "desc"
            pairs.sort(key=lambda p: (field_of(p[1]), p[1].id), reverse=desc)
        elif sort is not None:
            raise _error(422, "Validation Failed")
        else:
            pairs.sort(key=lambda p: p[1].id)
        return pairs

    def repo_issue_comments(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        pairs = self._repo_comments(request, repo, review=False)
        chosen, link = self.page(request, pairs, path=f"/repositories/{repo.id}/issues/comments")
        api = self.api(request)
        return [comment_payload(self.state, repo, i, c, api) for i, c in chosen], link

    def repo_pull_comments(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        pairs = self._repo_comments(request, repo, review=True)
        chosen, link = self.page(request, pairs, path=f"/repositories/{repo.id}/pulls/comments")
        api = self.api(request)
        return [review_comment_payload(self.state, repo, i, c, api) for i, c in chosen], link

    def pull(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        return pull_payload(
            self.state, repo, self._issue(repo, request, pull=True), self.api(request), login
        ), None

    def pull_comments(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        issue = self._issue(repo, request, pull=True)
        chosen, link = self.page(
            request,
            issue.review_comments,
            path=f"/repositories/{repo.id}/pulls/{issue.number}/comments",
        )
        api = self.api(request)
        return [review_comment_payload(self.state, repo, issue, c, api) for c in chosen], link

    def commits(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        if not repo.commits:
            raise _error(409, "Git Repository is empty.")
        sha = request.query_params.get("sha")
        if sha and sha != repo.default_branch and sha not in repo.objects:
            raise _error(404, f"No commit found for SHA: {sha}")
        start = sha if sha and sha != repo.default_branch else repo.head
        history = self.state.log_order(repo, start or "")
        author = request.query_params.get("author")
        since = _since(request)
        raw_until = request.query_params.get("until")
        until = parse_iso(raw_until) if raw_until else None
        found = [
            c
            for c in history
            if (author is None or author in (c.author_login, c.author_email))
            and (since is None or c.date >= since)
            and (until is None or c.date <= until)
        ]
        chosen, link = self.page(request, found, path=f"/repositories/{repo.id}/commits")
        api = self.api(request)
        return [commit_payload(self.state, repo, c, api) for c in chosen], link

    def commit(self, request: Request, login: str) -> tuple[Any, str | None]:
        repo = self.repo(request, login)
        ref = request.path_params["ref"]
        commit = repo.objects.get((repo.head or "") if ref == repo.default_branch else ref)
        if commit is None:
            raise _error(422, f"No commit found for SHA: {ref}")
        api = self.api(request)
        per_page = self.state.commit_files_per_page
        page = _int_param(request, "page", 1)
        files = commit.files[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(commit.files) // per_page))
        link = None
        if page < last:
            base = f"{api}/repositories/{repo.id}/commits/{commit.sha}"
            link = f'<{base}?page={page + 1}>; rel="next", <{base}?page={last}>; rel="last"'
        if "diff" in request.headers.get("accept", ""):
            return _Raw(_diff(commit), "application/vnd.github.v3.diff; charset=utf-8"), None
        payload = commit_payload(self.state, repo, commit, api)
        additions = sum(f.additions for f in commit.files)
        deletions = sum(f.deletions for f in commit.files)
        payload["stats"] = {
            "total": additions + deletions,
            "additions": additions,
            "deletions": deletions,
        }
        payload["files"] = [file_payload(self.state, repo, commit, f, api) for f in files]
        return payload, link

    def compare(self, request: Request, login: str) -> tuple[Any, str | None]:
        """`GET /repos/{o}/{r}/compare/{base}...{head}` (GitHub REST "Compare two commits",
        @octokit/openapi `commit-comparison`): `status` identical | ahead | behind | diverged,
        `ahead_by`/`behind_by`/`total_commits`, `merge_base_commit`, and the commits reachable
        from head but not from the merge base, in chronological order. Without `per_page` or
        `page` at most 250 commits (the most recent last); with them, pages of commits and the
        changed files (at most 300) on the first page only. An unknown commit, or two commits
        without a common ancestor, answer 404."""
        repo = self.repo(request, login)
        base_ref, dots, head_ref = request.path_params["basehead"].partition("...")
        if not dots:
            raise _error(404, "Not Found")

        def resolve(ref: str) -> str:
            sha = repo.head if ref == repo.default_branch else ref
            if sha is None or sha not in repo.objects:
                raise _error(404, "Not Found")
            return sha

        base, head = resolve(base_ref), resolve(head_ref)
        of_base = self.state.ancestors(repo, base)
        of_head = self.state.ancestors(repo, head)
        common = of_base & of_head
        if not common:
            raise _error(404, f"No common ancestor between {base_ref} and {head_ref}.")
        merge_base = max(common, key=lambda s: (repo.objects[s].date, s))
        listed = sorted(
            (repo.objects[s] for s in of_head - self.state.ancestors(repo, merge_base)),
            key=lambda c: (c.date, c.sha),
        )
        ahead, behind = len(of_head - of_base), len(of_base - of_head)
        status = (
            "identical"
            if base == head
            else "ahead"
            if behind == 0
            else "behind"
            if ahead == 0
            else "diverged"
        )
        api = self.api(request)
        paged = "per_page" in request.query_params or "page" in request.query_params
        link = None
        if paged:
            chosen, link = self.page(request, listed)
            first = _int_param(request, "page", 1) == 1
        else:
            chosen, first = listed[-250:], True
        files = [file_payload(self.state, repo, c, f, api) for c in listed for f in c.files][:300]
        u = f"{api}/repos/{repo.full_name}"
        html = f"{self.state.html_base}/{repo.full_name}"
        basehead = request.path_params["basehead"]
        return {
            "url": f"{u}/compare/{basehead}",
            "html_url": f"{html}/compare/{basehead}",
            "permalink_url": f"{html}/compare/{repo.owner}:{base}...{repo.owner}:{head}",
            "diff_url": f"{html}/compare/{basehead}.diff",
            "patch_url": f"{html}/compare/{basehead}.patch",
            "base_commit": commit_payload(self.state, repo, repo.objects[base], api),
            "merge_base_commit": commit_payload(self.state, repo, repo.objects[merge_base], api),
            "status": status,
            "ahead_by": ahead,
            "behind_by": behind,
            "total_commits": len(listed),
            "commits": [commit_payload(self.state, repo, c, api) for c in chosen],
            **({"files": files} if first else {}),
        }, link


def _endpoint_of(path: str, prefix: str) -> str:
    """A request path as its endpoint template (`/repos/{o}/{r}/pulls/{n}`)."""
    path = path.removeprefix(prefix)
    path = re.sub(r"^/repositories/\d+", "/repos/{o}/{r}", path)
    path = re.sub(r"^/repos/[^/]+/[^/]+", "/repos/{o}/{r}", path)
    path = re.sub(r"/[0-9a-f]{40}$", "/{sha}", path)
    return re.sub(r"/\d+(?=/|$)", "/{n}", path)


def create_app(state: GitHubState) -> Starlette:
    """The emulator as an ASGI app; mount point = `state.path_prefix` ("" or "/api/v3")."""
    handler = _Handler(state)

    def route(
        path: str, fn: Callable[[Request, str], tuple[Any, str | None]], *, free: bool = False
    ) -> list[Route]:
        async def endpoint(request: Request) -> Response:
            return await handler.dispatch(request, fn, free=free)

        paths = [path]
        if path.startswith("/repos/{owner}/{repo}"):
            paths.append(path.replace("/repos/{owner}/{repo}", "/repositories/{repo_id}"))
        return [Route(state.path_prefix + p, endpoint, methods=["GET"]) for p in paths]

    async def not_found(request: Request) -> Response:
        return JSONResponse({"message": "Not Found", "documentation_url": DOCS}, 404)

    async def graphql(request: Request) -> Response:
        """Only the query tap-github sends to look up repository ids (bench peer)."""
        try:
            login = handler.authenticate(request)
        except _Answer as answer:
            return answer.response
        query = str((await request.json()).get("query", ""))
        data: dict[str, Any] = {"rateLimit": {"cost": 1}}
        pattern = r'(\w+): repository\(name: "([^"]+)", owner: "([^"]+)"\)'
        for alias, name, owner in re.findall(pattern, query):
            repo = state.repos.get(f"{owner}/{name}")
            visible = repo is not None and not repo.deleted and repo.visible_to(login)
            data[alias] = (
                {"nameWithOwner": repo.full_name, "databaseId": repo.id}
                if visible and repo
                else None
            )
        state.log.append(LoggedRequest("POST", request.url.path, "", 200, login, None))
        return JSONResponse({"data": data})

    async def stats(request: Request) -> Response:
        """Emulator-only: counters for benchmarks running the emulator in another process."""
        if request.method == "DELETE":
            state.log.clear()
        return JSONResponse(
            {
                "requests": len(state.log),
                "notModified": state.count(status=304),
                "unitsUsed": state.units_used,
                "byStatus": {
                    str(code): state.count(status=code) for code in {r.status for r in state.log}
                },
                "byEndpoint": dict(
                    Counter(_endpoint_of(r.path, state.path_prefix) for r in state.log)
                ),
            }
        )

    routes = [
        Route("/_emulator/stats", stats, methods=["GET", "DELETE"]),
        Route(state.path_prefix + "/graphql", graphql, methods=["POST"]),
        *route("/rate_limit", handler.rate_limit, free=True),
        *route("/repos/{owner}/{repo}", handler.repository),
        *route("/user", handler.user),
        *route("/user/repos", handler.user_repos),
        *route("/issues", handler.issues),
        *route("/repos/{owner}/{repo}/issues", handler.repo_issues),
        *route("/repos/{owner}/{repo}/issues/comments", handler.repo_issue_comments),
        *route("/repos/{owner}/{repo}/issues/{number:int}", handler.issue),
        *route("/repos/{owner}/{repo}/issues/{number:int}/comments", handler.issue_comments),
        *route("/repos/{owner}/{repo}/pulls", handler.pulls),
        *route("/repos/{owner}/{repo}/pulls/comments", handler.repo_pull_comments),
        *route("/repos/{owner}/{repo}/pulls/{number:int}", handler.pull),
        *route("/repos/{owner}/{repo}/pulls/{number:int}/comments", handler.pull_comments),
        *route("/repos/{owner}/{repo}/commits", handler.commits),
        *route("/repos/{owner}/{repo}/commits/{ref}", handler.commit),
        *route("/repos/{owner}/{repo}/compare/{basehead:path}", handler.compare),
        Route("/{path:path}", not_found),
    ]
    return Starlette(routes=routes)


def seed_activity(
    state: GitHubState,
    login: str,
    *,
    repos: int,
    commits_per_repo: int,
    issues_per_repo: int,
    files_per_commit: int = 3,
    pull_ratio: float = 0.4,
    comment_ratio: float = 0.3,
    start: datetime | None = None,
    org: str = "acme",
) -> list[GhRepo]:
    """Deterministic activity for tests and benchmarks: half the repositories owned by `login`,
    half by an organisation it belongs to; commits authored by `login`, issues and pull requests
    (every `1/pull_ratio`-th item a PR), some with comments and review comments."""
    start = start or (datetime.now(UTC) - timedelta(days=60))
    created: list[GhRepo] = []
    for r in range(repos):
        owner = login if r % 2 == 0 else org
        repo = state.add_repo(
            owner, f"project-{r:02d}", org_members={login} if owner == org else set()
        )
        step = timedelta(days=50) / max(1, commits_per_repo)
        for c in range(commits_per_repo):
            files = [
                GhFile(
                    f"src/module_{c % 7}/file_{k}.py",
                    additions=3 + k,
                    deletions=k,
                    patch=f"@@ -1,{k + 1} +1,{k + 3} @@\n-old {k}\n+new {k}\n+another {c}",
                )
                for k in range(files_per_commit)
            ]
            if c % 10 == 0:
                files.append(
                    GhFile("poetry.lock", additions=40, deletions=12, patch="@@ lock @@\n+x")
                )
            if c % 25 == 0:
                files.append(
                    GhFile("docs/diagram.png", status="added", additions=0, deletions=0, patch=None)
                )
            state.add_commit(
                repo,
                f"Change {c} in {repo.name}\n\nLonger explanation of change {c}.",
                author=login,
                date=start + step * c,
                files=files,
            )
        every = max(1, round(1 / pull_ratio)) if pull_ratio > 0 else 0
        istep = timedelta(days=50) / max(1, issues_per_repo)
        for n in range(issues_per_repo):
            at = start + istep * n
            is_pull = bool(every) and n % every == 0
            issue = state.add_issue(
                repo,
                f"{'Pull' if is_pull else 'Issue'} {n} of {repo.name}",
                user=login if n % 3 else "octocat",
                created_at=at,
                is_pull=is_pull,
                labels=["bug"] if n % 4 == 0 else [],
                assignees=[login] if n % 5 == 0 else [],
            )
            if comment_ratio and n % max(1, round(1 / comment_ratio)) == 0:
                issue.comments.append(GhComment(next(_ids), "octocat", f"Comment on {n}", at, at))
                if is_pull:
                    issue.review_comments.append(
                        GhComment(next(_ids), "octocat", "nit: rename", at, at, "src/a.py", 3)
                    )
        repo.pushed_at = start + timedelta(days=50)
        created.append(repo)
    return created
