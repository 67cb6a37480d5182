"""The GitHub sync state: what is stored as the cursor, and which repositories are in scope.

The stored cursor (the `metadata` JSON of `ingestion_sync_state`) is::

    {
      "version": 1,
      "login": "mona",                       # from GET /user, kept for 304 answers
      "userEtag": "\"…\"",
      "reposEtags": [[url, etag], …],         # the last walk of GET /user/repos
      "repos": {
        "owner/name": {
          "branch": "main", "pushedAt": "…", "own": true,   # from /user/repos, kept for 304s
          "listed": true, "commitsPushedAt": "…",            # pushedAt when commits last done
          "head": sha, "headEtag": "\"…\"",               # branch head when commits last done
          "commits": {stream}, "issues": {stream},
          "issuesChecked": "…", "issueListEtags": [[url, etag], …]  # owned: last full listing
        }, …
      },
      "issues": {filter: {stream}}           # GET /issues?filter=… (created, assigned,
    }                                        # mentioned, subscribed; or all)

and a `{stream}` cursor is ``{"since": ISO, "seen": {key: ISO}, "etags": [[url, etag], …]}``:

- `since` is the exact `since` of the last request, so an unchanged account asks the very same
  URL again and gets a 304 (which costs no rate limit);
- `seen` holds the items (issue/PR number or commit sha → updated/commit date) answered at or
  after `since`, so an overlapping answer never refetches details of an item already ingested;
- when a listing takes more than one page, `since` moves to the newest date minus a lookback
  (`LOOKBACK` for issues: items updated while the sync ran are caught by the overlap;
  `COMMIT_LOOKBACK` for the first walk of commits) and `seen` keeps only what is inside the
  new window: the state stays bounded by about a page or a day of activity per stream.

Commits are walked by date only once (the first sync of a repository, back to the backfill
floor). After that the branch is walked by graph: from its new head back to `head`, the last
head ingested (`compare/{head}...{new}`), because `since` filters on a commit's own date and a
merged branch or a late push brings commits dated days before. Then the commits cursor's `seen`
holds only the commits of the pending comparison already taken (a deferred walk resumes
without refetching them).

A repository that leaves `/user/repos`, or answers 404/410/451, is dropped from the state (its
records are deleted by the provider's `scopes_gone`); one that answers 403 (blocked) keeps its
entry and cursor.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "COMMIT_LOOKBACK",
    "LOOKBACK",
    "STATE_VERSION",
    "GitHubState",
    "RepoInfo",
    "StreamCursor",
    "format_time",
    "parse_time",
    "repo_selected",
]

STATE_VERSION = 1
#: Overlap of issue `since` windows: items updated while a sync ran are seen by the next one.
LOOKBACK = timedelta(minutes=5)
#: Overlap of commit `since` windows: commits reach the default branch after they were made
#: (pushes of local work, fast-forward merges), so the window reaches a day back.
COMMIT_LOOKBACK = timedelta(days=1)


def parse_time(value: str | None) -> datetime | None:
    """GitHub's `2011-04-14T16:00:49Z` as an aware UTC datetime (None for None/garbage)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """The `YYYY-MM-DDTHH:MM:SSZ` form GitHub accepts in `since`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StreamCursor:
    """The cursor of one listing (a repository's commits or issues, or the user's issues)."""

    since: str | None = None
    seen: dict[str, str] = field(default_factory=dict)
    etags: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, raw: Any) -> StreamCursor:
        if not isinstance(raw, Mapping):
            return cls()
        seen = raw.get("seen")
        etags = raw.get("etags")
        return cls(
            since=raw.get("since") if isinstance(raw.get("since"), str) else None,
            seen={str(k): str(v) for k, v in seen.items()} if isinstance(seen, Mapping) else {},
            etags=[(str(p[0]), str(p[1])) for p in etags if isinstance(p, list | tuple)]
            if isinstance(etags, list)
            else [],
        )

    def dump(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "seen": dict(self.seen),
            "etags": [list(p) for p in self.etags],
        }

    def is_new(self, key: str, stamp: str) -> bool:
        """True unless `key` was already taken at this very `stamp`."""
        return self.seen.get(key) != stamp

    def advanced(
        self, newest: datetime, fresh: Mapping[str, str], lookback: timedelta = LOOKBACK
    ) -> StreamCursor:
        """The cursor after a listing of more than one page: window moved to `newest -
        lookback`, `seen` narrowed to it, no ETags (the next walk asks a new URL)."""
        since = newest - lookback
        seen = {k: v for k, v in fresh.items() if (parse_time(v) or since) >= since}
        return StreamCursor(since=format_time(since), seen=seen, etags=[])


@dataclass
class RepoInfo:
    """A repository as last listed by `/user/repos`, with its stream cursors."""

    full_name: str
    branch: str = "main"
    pushed_at: str | None = None
    own: bool = False
    commits: StreamCursor = field(default_factory=StreamCursor)
    issues: StreamCursor = field(default_factory=StreamCursor)
    #: `pushedAt` when the commits stream last completed (skip the listing while unchanged).
    commits_pushed_at: str | None = None
    #: Read from states written before repositories that left `/user/repos` were dropped.
    listed: bool = True
    #: Owned repositories: when the whole issue listing was last checked for issues deleted
    #: or transferred away, and the ETags of that listing's pages.
    issues_checked: str | None = None
    issue_list_etags: list[tuple[str, str]] = field(default_factory=list)
    #: The default branch's head when its commits were last all taken (None until the first
    #: walk completed), and the ETag of the one-commit listing that names it.
    head: str | None = None
    head_etag: str | None = None

    @classmethod
    def load(cls, full_name: str, raw: Any) -> RepoInfo:
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(
            full_name=full_name,
            branch=str(raw.get("branch") or "main"),
            pushed_at=raw.get("pushedAt"),
            own=bool(raw.get("own")),
            commits=StreamCursor.load(raw.get("commits")),
            issues=StreamCursor.load(raw.get("issues")),
            commits_pushed_at=raw.get("commitsPushedAt"),
            listed=bool(raw.get("listed", True)),
            issues_checked=raw.get("issuesChecked")
            if isinstance(raw.get("issuesChecked"), str)
            else None,
            issue_list_etags=_etags(raw.get("issueListEtags")),
            head=raw.get("head") if isinstance(raw.get("head"), str) else None,
            head_etag=raw.get("headEtag") if isinstance(raw.get("headEtag"), str) else None,
        )

    def dump(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "pushedAt": self.pushed_at,
            "own": self.own,
            "commits": self.commits.dump(),
            "issues": self.issues.dump(),
            "commitsPushedAt": self.commits_pushed_at,
            "listed": self.listed,
            "issuesChecked": self.issues_checked,
            "issueListEtags": [list(p) for p in self.issue_list_etags],
            "head": self.head,
            "headEtag": self.head_etag,
        }


@dataclass
class GitHubState:
    """The whole cursor; `dump()` is what a `SyncPage.state` carries."""

    login: str | None = None
    user_etag: str | None = None
    repos_etags: list[tuple[str, str]] = field(default_factory=list)
    repos: dict[str, RepoInfo] = field(default_factory=dict)
    #: One cursor per `/issues` filter.
    issues: dict[str, StreamCursor] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> GitHubState:
        if raw.get("version") != STATE_VERSION:
            return cls()
        repos = raw.get("repos")
        etags = raw.get("reposEtags")
        return cls(
            login=raw.get("login"),
            user_etag=raw.get("userEtag"),
            repos_etags=[(str(p[0]), str(p[1])) for p in etags] if isinstance(etags, list) else [],
            repos={k: RepoInfo.load(k, v) for k, v in repos.items()}
            if isinstance(repos, Mapping)
            else {},
            issues=_issue_cursors(raw.get("issues")),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "login": self.login,
            "userEtag": self.user_etag,
            "reposEtags": [list(p) for p in self.repos_etags],
            "repos": {k: v.dump() for k, v in sorted(self.repos.items())},
            "issues": {k: v.dump() for k, v in sorted(self.issues.items())},
        }


def _etags(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        return []
    return [(str(p[0]), str(p[1])) for p in raw if isinstance(p, list | tuple) and len(p) == 2]


def _issue_cursors(raw: Any) -> dict[str, StreamCursor]:
    """The per-filter cursors (a cursor of the former single `filter=all` stream is `all`)."""
    if not isinstance(raw, Mapping):
        return {}
    if "since" in raw or "seen" in raw:
        return {"all": StreamCursor.load(raw)}
    return {str(k): StreamCursor.load(v) for k, v in raw.items()}


def _patterns(raw: str) -> list[str]:
    return [p.strip().lower() for p in raw.split(",") if p.strip()]


def repo_selected(full_name: str, allow: str, deny: str) -> bool:
    """`owner/repo` passes the allow list (empty = all) and no deny pattern (globs, any case)."""
    name = full_name.lower()
    allowed = _patterns(allow)
    if allowed and not any(fnmatch.fnmatchcase(name, p) for p in allowed):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in _patterns(deny))


def newest(stamps: Iterable[str]) -> datetime | None:
    """The latest of some ISO stamps (None when there are none)."""
    parsed = [p for p in (parse_time(s) for s in stamps) if p is not None]
    return max(parsed) if parsed else None
