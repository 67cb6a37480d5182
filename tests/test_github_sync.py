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
from tests.emulators.github import GhFile, GitHubState, create_app, seed_activity
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
    services = await services_for(server.url)

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
    assert state.count(path=r"^/repositories/\d+/issues$") >= 2
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
    services = await services_for(server.url)

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


async def test_deleted_and_blocked_repositories_are_skipped_with_their_cursor_kept(
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
    assert after["repos"]["mona/gone"]["commits"] == gone_cursor
    assert after["repos"]["mona/gone"]["listed"] is False
    assert after["repos"]["mona/blocked"]["commits"] == cursor["repos"]["mona/blocked"]["commits"]
    stored = await records(services)
    assert sum(1 for k in stored if k.startswith("mona/keep@")) == 2
    assert "mona/empty#1" in stored  # the empty repository's 409 did not stop its issues


async def test_repository_answering_404_is_skipped_and_keeps_its_cursor(
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
    after = (await services.engine.state.load("u1", "github")).cursor["repos"]["mona/goes"]
    assert after["commits"] == before["commits"]
    assert after["issues"] == before["issues"]
    stored = await records(services)
    assert sum(1 for k in stored if k.startswith("mona/stays@")) == 2


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
