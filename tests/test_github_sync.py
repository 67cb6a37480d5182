"""The GitHub provider end to end: engine + embedded store against the GitHub emulator.

Every test runs the real `SyncEngine` (through `Services.open`) on its own SQLite database and
its own emulator; records are read back from the embedded memory store.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ingestion.clock import SystemClock
from ingestion.config import Settings
from ingestion.errors import IngestionError, RateLimited
from ingestion.providers.base import FetchOptions
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.models import MemoryRow
from ingestion.sync import SyncSummary
from tests.conftest import run_cli
from tests.emulators.github import ABUSE_MESSAGE, GhFile, GitHubState, create_app, seed_activity
from tests.emulators.server import RunningServer, serve

TOKEN = "gho_test_token_mona"
#: Small pages, so a few dozen items already take several pages per listing.
PAGE = 10


class ShiftedClock(SystemClock):
    """Wall time plus `offset` seconds, shared by the service and the emulator (so a test can
    jump past a rate-limit reset instead of waiting an hour)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def github(clock: ShiftedClock) -> Iterator[tuple[GitHubState, RunningServer]]:
    state = GitHubState(clock=clock.time)
    state.add_user("mona", token=TOKEN)
    state.add_user("octocat")
    server = serve(create_app(state))
    yield state, server
    server.stop()


async def open_services(
    tmp_path: Path, api_url: str, clock: ShiftedClock, **overrides: Any
) -> Services:
    settings = Settings(
        database_url=overrides.pop("database_url", f"sqlite:///{tmp_path / 'ingestion.db'}"),
        github_api_url=api_url,
        github_rate_limit_reserve=overrides.pop("github_rate_limit_reserve", 0),
        github_page_size=overrides.pop("github_page_size", PAGE),
        **overrides,
    )
    services = await Services.open(settings, clock=clock)
    async with services.db.session() as session:
        await save_account(session, user_id="u1", provider_id="github", access_token=TOKEN)
    return services


@pytest.fixture
async def services_for(tmp_path: Path, clock: ShiftedClock) -> AsyncIterator[Any]:
    opened: list[Services] = []

    async def factory(api_url: str, **overrides: Any) -> Services:
        services = await open_services(tmp_path, api_url, clock, **overrides)
        opened.append(services)
        return services

    yield factory
    for services in opened:
        await services.aclose()


async def sync(services: Services, **options: Any) -> SyncSummary:
    return await services.engine.run("github", "u1", FetchOptions(**options))


async def records(services: Services) -> dict[str, MemoryRow]:
    async with services.db.session() as session:
        rows = (await session.execute(select(MemoryRow))).scalars().all()
        return {row.source_id: row for row in rows}


async def test_full_sync_across_repositories_with_pagination(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    seed_activity(state, "mona", repos=3, commits_per_repo=25, issues_per_repo=24)
    # Every organisation issue too (most are octocat's): pagination of `/issues` itself.
    services = await services_for(server.url, github_issues_filter="all")

    summary = await sync(services)

    stored = await records(services)
    commits = [r for r in stored.values() if r.type == "commit"]
    issues = [r for r in stored.values() if r.type == "issue"]
    pulls = [r for r in stored.values() if r.type == "pull_request"]
    assert len(commits) == 3 * 25
    assert len(issues) + len(pulls) == 3 * 24
    assert summary.status == "ok"
    # More than one page per listing, each followed through Link rel="next" (to /repositories/…).
    assert state.count(path=r"^/repositories/\d+/commits$") >= 3 * 2
    # Issue listings go by keyset (`since` = the last `updated_at` read), not by page links.
    asked = [r.query for r in state.log if r.path == "/repos/mona/project-00/issues"]
    assert len({re.search(r"since=([^&]+)", q).group(1) for q in asked}) >= 2  # type: ignore[union-attr]
    assert state.count(path=r"^/repositories/\d+/issues$") == 0
    assert summary.stats["rateLimitUnits"] == state.units_used

    commit = next(r for r in commits if r.source_id.startswith("mona/project-00@"))
    assert commit.title.startswith("Change ")
    assert commit.url
    assert "/commit/" in commit.url
    assert "Changed files" in commit.content
    assert "+new" in commit.content
    assert commit.meta["repo"] == "mona/project-00"
    assert commit.meta["files"][0].keys() == {"filename", "status", "additions", "deletions"}
    lock = next(r for r in commits if any(f["filename"] == "poetry.lock" for f in r.meta["files"]))
    assert "poetry.lock (+40 -12) [generated, not shown]" in lock.content
    assert "@@ lock @@" not in lock.content

    pull = pulls[0]
    assert pull.source_id.count("#") == 1
    assert {"merged", "draft", "baseRef", "headRef"} <= pull.meta.keys()
    with_review = next(r for r in pulls if r.meta["reviewComments"])
    assert "Review comments (1):" in with_review.content
    assert "@octocat on src/a.py:3: nit: rename" in with_review.content


async def test_unchanged_resync_makes_only_conditional_requests(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    seed_activity(state, "mona", repos=3, commits_per_repo=25, issues_per_repo=25)
    services = await services_for(server.url)
    await sync(services)
    window = state.window("mona")
    remaining = window.remaining
    before = len(state.log)

    summary = await sync(services)

    second = state.log[before:]
    assert second, "the re-sync asked nothing at all"
    assert {r.status for r in second} == {304}
    assert all(r.if_none_match for r in second)
    assert state.window("mona").remaining == remaining
    assert summary.upserted == 0
    assert summary.stats["rateLimitUnits"] == 0


async def test_a_new_token_gets_200s_for_old_etags_and_rereads_only_the_listings(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    """ETags are bound to the token: after a rotation (GitHub App user tokens every 8 hours)
    every listing page answers 200 and costs a rate-limit unit, but no item's details are
    fetched again and nothing is re-sent; the next sync on the same token is all 304 again."""
    state, server = github
    seed_activity(state, "mona", repos=3, commits_per_repo=25, issues_per_repo=25)
    services = await services_for(server.url)
    await sync(services)
    quiet = len(state.log)
    await sync(services)
    listing_pages = len(state.log) - quiet

    state.tokens["gho_rotated"] = "mona"
    async with services.db.session() as session:
        await save_account(session, user_id="u1", provider_id="github", access_token="gho_rotated")
    before = len(state.log)
    rotated = await sync(services)

    after_rotation = state.log[before:]
    assert rotated.upserted == 0
    assert {r.status for r in after_rotation} == {200}
    assert all(r.if_none_match for r in after_rotation)  # the old ETags were sent, in vain
    assert len(after_rotation) == listing_pages
    assert rotated.stats["rateLimitUnits"] == listing_pages
    assert not [
        r for r in after_rotation if re.search(r"/(commits/[0-9a-f]{40}|pulls/\d+)$", r.path)
    ]

    before = len(state.log)
    again = await sync(services)
    assert {r.status for r in state.log[before:]} == {304}
    assert again.stats["rateLimitUnits"] == 0


async def test_issue_edited_and_pull_request_merged_between_syncs(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    repo = state.add_repo("mona", "notes")
    state.add_commit(repo, "Initial commit", author="mona", files=[GhFile("README.md")])
    issue = state.add_issue(repo, "Crash on start", user="mona")
    pull = state.add_issue(repo, "Fix the crash", user="mona", is_pull=True, head_ref="fix-crash")
    services = await services_for(server.url)
    await sync(services)
    before = await records(services)
    assert before["mona/notes#2"].meta["merged"] is False
    assert before["mona/notes#2"].meta["headRef"] == "fix-crash"

    issue.body = "Crash on start, with a stack trace"
    state.add_comment(issue, "octocat", "I can reproduce it.")
    state.merge_pull(pull)
    summary = await sync(services)

    after = await records(services)
    assert summary.upserted == 2
    assert "with a stack trace" in after["mona/notes#1"].content
    assert "@octocat" in after["mona/notes#1"].content
    assert "I can reproduce it." in after["mona/notes#1"].content
    assert after["mona/notes#2"].meta["state"] == "closed"
    assert after["mona/notes#2"].meta["merged"] is True
    assert len(after) == len(before)


async def test_rate_limit_exhaustion_defers_to_reset_and_resumes_without_duplicates(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    state, server = github
    seed_activity(state, "mona", repos=2, commits_per_repo=30, issues_per_repo=10)
    state.rate_limit = 40
    services = await services_for(server.url, github_issues_filter="all")

    with pytest.raises(RateLimited) as stopped:
        await sync(services)

    reset = state.windows["mona"].reset
    assert stopped.value.retry_after is not None
    assert abs(stopped.value.retry_after - (reset - clock.time())) < 5
    assert stopped.value.retry_after > 3000  # deferred to the reset, not slept in the worker
    row = await services.engine.state.load("u1", "github")
    assert row.status != "error"
    partial = await records(services)
    assert 0 < len(partial) < 2 * 40

    clock.offset += 3601  # the window resets
    state.rate_limit = 5000
    requests_before = len(state.log)
    summary = await sync(services)

    assert summary.status == "ok"
    stored = await records(services)
    assert len(stored) == 2 * 40
    details = [
        r for r in state.log[requests_before:] if re.search(r"/commits/[0-9a-f]{40}$", r.path)
    ]
    taken_before = sum(1 for r in partial.values() if r.type == "commit")
    assert len(details) == 2 * 30 - taken_before  # no commit fetched twice


async def test_stops_before_the_reserve_is_spent(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    seed_activity(state, "mona", repos=1, commits_per_repo=60, issues_per_repo=0)
    state.rate_limit = 50
    services = await services_for(server.url, github_rate_limit_reserve=20)

    with pytest.raises(RateLimited):
        await sync(services)

    assert state.window("mona").remaining >= 20 - 4  # in-flight requests may finish
    assert not any(r.status == 403 for r in state.log)


async def test_secondary_rate_limit_is_waited_out(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    repo = state.add_repo("mona", "notes")
    state.add_commit(repo, "Initial commit", author="mona", files=[GhFile("README.md")])
    state.secondary_limit_requests = 2
    state.secondary_retry_after = 1
    services = await services_for(server.url)

    summary = await sync(services)

    assert summary.status == "ok"
    assert state.count(status=403) == 2
    assert "mona/notes@" + repo.commits[0].sha in await records(services)


async def test_retry_after_on_a_403_is_honoured_whatever_the_message_says(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    """An older Enterprise server's "abuse detection" 403 with `retry-after` on a repository's
    listing is waited out: the repository is neither skipped nor the sync failed."""
    state, server = github
    repo = state.add_repo("mona", "notes")
    state.add_commit(repo, "Initial commit", author="mona", files=[GhFile("README.md")])
    state.add_issue(repo, "An issue", user="mona")
    state.secondary_message = ABUSE_MESSAGE
    state.secondary_limit_path = r"/commits$"
    state.secondary_limit_requests = 2
    state.secondary_retry_after = 1
    services = await services_for(server.url)

    summary = await sync(services)

    assert summary.status == "ok"
    assert state.count(status=403) == 2
    stored = await records(services)
    assert "mona/notes@" + repo.commits[0].sha in stored
    assert "mona/notes#1" in stored


@pytest.mark.parametrize("setting", ["participating", "all"])
async def test_issues_of_other_repositories_are_those_the_person_takes_part_in(
    github: tuple[GitHubState, RunningServer], services_for: Any, setting: str
) -> None:
    """`/issues?filter=all` is every issue an organisation member can see: by default only
    what the person created, is assigned to, is mentioned in or subscribed to is taken (plus
    every issue of their own repositories); `GITHUB_ISSUES_FILTER=all` takes everything."""
    state, server = github
    own = state.add_repo("mona", "notes")
    org = state.add_repo("acme", "platform", org_members={"mona"})
    state.add_issue(own, "Someone else's issue in my repo", user="octocat")
    created = state.add_issue(org, "Mine", user="mona")
    assigned = state.add_issue(org, "Assigned", user="octocat", assignees=["mona"])
    mentioned = state.add_issue(org, "Ping", user="octocat", body="@mona can you look?")
    commented = state.add_issue(org, "Discussed", user="octocat")
    state.add_comment(commented, "mona", "I had a look")
    others = [state.add_issue(org, f"Unrelated {n}", user="octocat") for n in range(5)]
    services = await services_for(server.url, github_issues_filter=setting)

    summary = await sync(services)

    assert summary.status == "ok"
    stored = await records(services)
    assert "mona/notes#1" in stored
    for issue in (created, assigned, mentioned, commented):
        assert f"acme/platform#{issue.number}" in stored
    taken = {f"acme/platform#{i.number}" for i in others} & stored.keys()
    assert len(taken) == (5 if setting == "all" else 0)
    asked = {r.query for r in state.log if r.path == "/issues"}
    filters = {q.split("filter=")[1].split("&")[0] for q in asked}
    expected = {"all"} if setting == "all" else {"created", "assigned", "mentioned", "subscribed"}
    assert filters == expected

    before = len(state.log)
    again = await sync(services)
    assert again.upserted == 0
    assert {r.status for r in state.log[before:] if r.path == "/issues"} == {304}


async def test_commits_are_walked_from_the_last_head_not_by_their_dates(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    """`since` filters on the commit's own date: a branch written last week and merged today,
    old local work pushed today, and a force-push all bring commits the date window misses.
    The walk goes from the new head back to the last head ingested (compare), and a
    force-push whose old head is gone gets a bounded re-walk."""
    state, server = github
    repo = state.add_repo("mona", "notes")
    now = clock.now()
    for n in range(15):  # more than a page: a date window would move up to the newest
        state.add_commit(
            repo, f"base {n}", author="mona", date=now - timedelta(days=30 - n), files=[]
        )
    state.add_commit(repo, "recent", author="mona", date=now - timedelta(hours=2), files=[])
    services = await services_for(server.url)
    await sync(services)
    assert len(await records(services)) == 16

    # A branch from an old commit, written ten days ago, merged now (merge commit by mona),
    # plus a colleague's commit on it (not mona's: not taken).
    old_base = repo.commits[-1].sha
    tip = state.branch(
        repo,
        old_base,
        ["feature a", "feature b"],
        author="mona",
        dates=[now - timedelta(days=10), now - timedelta(days=9)],
    )
    tip = state.branch(repo, tip, ["colleague"], author="octocat", dates=[now - timedelta(days=8)])
    merge = state.merge(repo, tip, author="mona")
    # Local work made five days ago, pushed now on top of the merge.
    late = state.add_commit(repo, "late push", author="mona", date=now - timedelta(days=5))
    clock.offset += 600

    summary = await sync(services)

    stored = await records(services)
    titles = {r.title for r in stored.values()}
    assert {"feature a", "feature b", "late push", "Merge branch"} <= titles
    assert "colleague" not in titles
    assert f"mona/notes@{merge}" in stored
    assert f"mona/notes@{late.sha}" in stored
    assert summary.status == "ok"
    assert state.count(path=r"/compare/") == 1

    # A force-push: history rewritten from an old commit (the old head is still known).
    rewritten = state.branch(
        repo, old_base, ["rewritten"], author="mona", dates=[now - timedelta(days=6)]
    )
    state.force_push(repo, rewritten)
    clock.offset += 600
    rewrite = await sync(services)
    # What the push took off the branch leaves the memory: every commit of mona's after the
    # old base (the colleague's commit was never taken); the new commit comes in.
    assert {r.title for r in (await records(services)).values()} == {"base 0", "rewritten"}
    assert rewrite.deleted == 19  # base 1-14, recent, feature a and b, merge, late push
    # Listed by the reverse comparison (new head...old head): 19 commits, two pages of ten.
    assert state.count(path=rf"/compare/{rewritten}\.\.\.{late.sha}") == 2

    # A force-push whose old head was garbage-collected: a bounded re-walk finds the new work.
    gone = state.branch(
        repo, old_base, ["after gc"], author="mona", dates=[now - timedelta(days=3)]
    )
    state.force_push(repo, gone, forget=True)
    clock.offset += 600
    again = await sync(services)
    assert again.status == "ok"
    assert "after gc" in {r.title for r in (await records(services)).values()}
    assert state.count(path=r"/compare/", status=404) == 1

    # Unchanged: nothing but conditional requests.
    clock.offset += 600
    before = len(state.log)
    quiet = await sync(services)
    assert quiet.upserted == 0
    assert {r.status for r in state.log[before:]} == {304}


async def test_a_branch_reset_to_an_older_commit_deletes_what_it_dropped(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    """`git push --force` of an older commit (the new head is behind the old one): nothing
    new, and the person's commits the branch no longer has leave the memory. A colleague's
    dropped commit was never taken and is not asked about."""
    state, server = github
    repo = state.add_repo("mona", "notes")
    now = clock.now()
    for n in range(3):
        state.add_commit(repo, f"kept {n}", author="mona", date=now - timedelta(days=5 - n))
    keep = repo.commits[0].sha
    state.add_commit(repo, "theirs", author="octocat", date=now - timedelta(days=1))
    state.add_commit(repo, "leaked secret", author="mona", date=now - timedelta(hours=1))
    services = await services_for(server.url)
    await sync(services)
    assert {r.title for r in (await records(services)).values()} == {
        "kept 0",
        "kept 1",
        "kept 2",
        "leaked secret",
    }

    state.force_push(repo, keep)
    clock.offset += 600
    summary = await sync(services)
    assert summary.deleted == 1
    assert summary.upserted == 0
    assert {r.title for r in (await records(services)).values()} == {"kept 0", "kept 1", "kept 2"}


async def test_an_issue_updated_while_its_listing_is_paged_skips_nothing(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    """Sorted by `updated`, an item updated mid-walk moves to the end and every item behind
    it shifts up by one: a walk by page number (or offset cursor) skips the item that crossed
    the page boundary, for good. The walk goes by `since` on the last `updated_at` seen."""
    state, server = github
    repo = state.add_repo("mona", "notes")
    start = clock.now() - timedelta(days=3)
    issues = [
        state.add_issue(repo, f"Issue {n}", user="octocat", created_at=start + timedelta(minutes=n))
        for n in range(25)
    ]
    touched: list[str] = []

    def update_the_first_issue_at_the_second_request(path: str, query: str) -> None:
        if re.search(r"^/(repos/mona/notes|repositories/\d+)/issues$", path):
            touched.append(query)
            if len(touched) == 2:
                state.touch(issues[0])

    state.before_request = update_the_first_issue_at_the_second_request
    services = await services_for(server.url)

    summary = await sync(services)

    assert len(touched) >= 2, "the listing was never asked a second page"
    stored = await records(services)
    missing = [i.number for i in issues if f"mona/notes#{i.number}" not in stored]
    assert missing == []
    assert summary.status == "ok"


async def test_a_walk_between_heads_deferred_by_the_rate_limit_resumes_without_refetching(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    state, server = github
    repo = state.add_repo("mona", "notes")
    now = clock.now()
    state.add_commit(repo, "base", author="mona", date=now - timedelta(days=40), files=[])
    services = await services_for(server.url)
    await sync(services)
    dates = [now - timedelta(days=20, hours=-n) for n in range(70)]
    tip = state.branch(
        repo, repo.head or "", [f"work {n}" for n in range(70)], author="mona", dates=dates
    )
    state.merge(repo, tip, author="mona")
    clock.offset += 600
    # Enough for the listings and one chunk of details (50), not for the rest.
    state.exhaust("mona", reset_in=3600, remaining=65)

    with pytest.raises(RateLimited):
        await sync(services)
    partial = {r.title for r in (await records(services)).values()}
    assert 1 < len(partial) < 72

    clock.offset += 3601
    state.rate_limit = 5000
    before = len(state.log)
    summary = await sync(services)

    assert summary.status == "ok"
    titles = {r.title for r in (await records(services)).values()}
    assert {f"work {n}" for n in range(70)} | {"Merge branch"} <= titles
    fetched = [r.path for r in state.log[before:] if re.search(r"/commits/[0-9a-f]{40}$", r.path)]
    assert len(fetched) == len(fetched_set := set(fetched))
    assert len(fetched_set) == 72 - len(partial)  # only what the first attempt did not take


async def test_deleted_repository_loses_its_records_and_a_blocked_one_keeps_its_cursor(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    keep = state.add_repo("mona", "keep")
    gone = state.add_repo("mona", "gone")
    blocked = state.add_repo("mona", "blocked")
    empty = state.add_repo("mona", "empty")
    for repo in (keep, gone, blocked):
        state.add_commit(repo, f"work in {repo.name}", author="mona", files=[GhFile("a.py")])
    state.add_issue(empty, "Nothing pushed yet", user="mona")
    services = await services_for(server.url)
    await sync(services)
    cursor = (await services.engine.state.load("u1", "github")).cursor
    gone_cursor = cursor["repos"]["mona/gone"]["commits"]

    gone.deleted = True
    blocked.blocked = True
    state.add_commit(keep, "more work", author="mona", files=[GhFile("b.py")])
    summary = await sync(services)

    assert summary.status == "ok"
    assert state.count(status=403) >= 1
    after = (await services.engine.state.load("u1", "github")).cursor
    assert gone_cursor
    assert "mona/gone" not in after["repos"]  # left /user/repos: its records are deleted
    assert summary.deleted == 1
    assert after["repos"]["mona/blocked"]["commits"] == cursor["repos"]["mona/blocked"]["commits"]
    stored = await records(services)
    assert not any(k.startswith("mona/gone") for k in stored)
    assert sum(1 for k in stored if k.startswith("mona/blocked@")) == 1
    assert sum(1 for k in stored if k.startswith("mona/keep@")) == 2
    assert "mona/empty#1" in stored  # the empty repository's 409 did not stop its issues


async def test_repository_answering_404_loses_its_records(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    stays = state.add_repo("mona", "stays")
    goes = state.add_repo("mona", "goes")
    for repo in (stays, goes):
        state.add_commit(repo, f"first in {repo.name}", author="mona", files=[GhFile("a.py")])
        state.add_issue(repo, f"issue in {repo.name}", user="mona")
    services = await services_for(server.url)
    await sync(services)
    before = (await services.engine.state.load("u1", "github")).cursor["repos"]["mona/goes"]

    goes.vanishing = True
    state.add_commit(goes, "lost work", author="mona", files=[GhFile("b.py")])
    state.add_commit(stays, "second in stays", author="mona", files=[GhFile("b.py")])
    summary = await sync(services)

    assert summary.status == "ok"
    assert state.count(status=404) >= 1
    assert before["commits"]
    # Still listed by /user/repos (listings lag), but 404: its commit and issue are deleted.
    assert summary.deleted == 2
    after = (await services.engine.state.load("u1", "github")).cursor["repos"]
    assert "mona/goes" not in after
    stored = await records(services)
    assert not any(k.startswith("mona/goes") for k in stored)
    assert sum(1 for k in stored if k.startswith("mona/stays@")) == 2
    assert "mona/stays#1" in stored


async def test_max_results_stops_early_and_the_next_sync_continues(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    seed_activity(state, "mona", repos=1, commits_per_repo=30, issues_per_repo=0)
    services = await services_for(server.url)

    first = await sync(services, max_results=5)
    rest = await sync(services)

    assert first.status == "ok"
    assert 5 <= first.upserted < 30
    assert first.upserted + rest.upserted == 30
    assert len(await records(services)) == 30


async def test_enterprise_base_url_with_path_prefix(services_for: Any) -> None:
    state = GitHubState(path_prefix="/api/v3", html_base="https://ghe.example.com")
    state.add_user("mona", token=TOKEN)
    repo = state.add_repo("mona", "internal")
    for n in range(3):
        state.add_commit(repo, f"change {n}", author="mona", files=[GhFile("x.py")])
    state.add_issue(repo, "Internal bug", user="mona")
    server = serve(create_app(state))
    try:
        services = await services_for(f"{server.url}/api/v3")
        summary = await sync(services)
    finally:
        server.stop()

    assert summary.status == "ok"
    assert all(r.path.startswith("/api/v3/") for r in state.log)
    stored = await records(services)
    assert len(stored) == 4
    assert stored["mona/internal#1"].url == "https://ghe.example.com/mona/internal/issues/1"


async def test_bad_credentials_need_reauthentication(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    state.tokens.clear()
    services = await services_for(server.url)

    with pytest.raises(IngestionError) as failed:
        await sync(services)

    assert type(failed.value).__name__ == "ReauthRequired"
    assert TOKEN not in str(failed.value)


async def test_scope_filters_and_backfill_window(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    old = datetime.now(UTC) - timedelta(days=400)
    stale = state.add_repo("mona", "stale")
    state.add_commit(stale, "ancient", author="mona", date=old, files=[GhFile("a.py")])
    stale.pushed_at = old
    denied = state.add_repo("mona", "secret-plans")
    state.add_commit(denied, "hidden", author="mona", files=[GhFile("a.py")])
    mine = state.add_repo("mona", "mine")
    state.add_commit(mine, "mine", author="mona", files=[GhFile("a.py")])
    state.add_commit(mine, "theirs", author="octocat", files=[GhFile("a.py")])
    services = await services_for(server.url, github_repos_deny="mona/secret-*")

    await sync(services)

    stored = await records(services)
    assert [r.title for r in stored.values() if r.type == "commit"] == ["mine"]
    assert not state.count(path="secret-plans")
    assert not state.count(path="/stale/")


async def test_commit_with_more_than_300_files_is_read_across_pages(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    repo = state.add_repo("mona", "monorepo")
    files = [GhFile(f"pkg/f{n:03}.py", patch=f"@@ -1 +1 @@\n+line {n}") for n in range(650)]
    commit = state.add_commit(repo, "Reformat everything", author="mona", files=files)
    services = await services_for(server.url, github_patch_budget_bytes=2_000)

    await sync(services)

    detail_pages = [r for r in state.log if commit.sha in r.path]
    assert len(detail_pages) == 3  # 300 + 300 + 50 files, through Link rel="next"
    record = (await records(services))[f"mona/monorepo@{commit.sha}"]
    assert "Changed files (650, +650 -0):" in record.content
    assert "… and 350 more files" in record.content
    assert len(record.meta["files"]) == 300
    assert record.meta["filesOmitted"] == 350
    assert record.meta["additions"] == 650
    assert "over the 2000-byte budget" in record.content


@pytest.mark.slow
async def test_cli_sync_prints_a_json_summary(
    github: tuple[GitHubState, RunningServer], base_env: dict[str, str], services_for: Any
) -> None:
    state, server = github
    repo = state.add_repo("mona", "cli")
    state.add_commit(repo, "From the command line", author="mona", files=[GhFile("a.py")])
    state.add_issue(repo, "Issue", user="mona")
    env = {**base_env, "GITHUB_API_URL": server.url}
    # The account, stored in the SQLite file the command opens (both are tmp_path/ingestion.db).
    await services_for(server.url)

    result = await asyncio.to_thread(run_cli, "sync", "github", "--user", "u1", "--json", env=env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["upserted"]) == ("ok", 2)
    assert summary["stats"]["rateLimitUnits"] == state.units_used
    assert TOKEN not in result.stdout + result.stderr


async def test_a_commit_that_cannot_be_transformed_is_skipped_and_counted(
    github: tuple[GitHubState, RunningServer], services_for: Any
) -> None:
    state, server = github
    repo = state.add_repo("mona", "hostile")
    kept = state.add_commit(repo, "Fine change", author="mona", files=[GhFile("a.py")])
    # A count of `Infinity` (valid JSON to Python's parser; the API never sends one): no
    # record can be made of it.
    broken = state.add_commit(
        repo,
        "Broken counts",
        author="mona",
        files=[GhFile("b.py", additions=float("inf"))],  # type: ignore[arg-type]
    )
    services = await services_for(server.url)

    summary = await sync(services)

    assert summary.status == "ok"
    assert summary.stats.get("skipped") == 1
    stored = await records(services)
    assert f"mona/hostile@{kept.sha}" in stored
    assert f"mona/hostile@{broken.sha}" not in stored
    # Not retried for ever: the next sync moves on.
    again = await sync(services)
    assert again.status == "ok"
    assert not again.stats.get("skipped")
