"""GitHub deletions no cursor reports: issues transferred or deleted, repositories gone.

The real engine and embedded store against the GitHub emulator (which answers a transferred
issue's old URL with 301 and a deleted one with 410, as GitHub does).
"""

from __future__ import annotations

from typing import Any

from ingestion.providers.github.provider import ISSUE_CHECK_EVERY
from tests.emulators.github import GhFile, GitHubState
from tests.emulators.server import RunningServer
from tests.test_github_sync import ShiftedClock, records, sync

# Fixtures of the GitHub sync tests, re-exported for this module.
from tests.test_github_sync import clock as clock
from tests.test_github_sync import github as github
from tests.test_github_sync import services_for as services_for


def issue_checks(state: GitHubState) -> int:
    """Whole-listing reads (`state=all` without `since`) of repository issues."""
    return sum(
        1
        for r in state.log
        if "/issues" in r.path and "state=all" in r.query and "since=" not in r.query
    )


async def test_transferred_and_deleted_issues_lose_their_records(
    github: tuple[GitHubState, RunningServer],
    services_for: Any,
    clock: ShiftedClock,
) -> None:
    state, server = github
    source = state.add_repo("mona", "app")
    target = state.add_repo("mona", "app-docs")
    moved = state.add_issue(source, "Docs are wrong", user="mona")
    doomed = state.add_issue(source, "Spam", user="octocat")
    kept = state.add_issue(source, "Real bug", user="mona")
    services = await services_for(server.url)
    await sync(services)
    assert {"mona/app#1", "mona/app#2", "mona/app#3"} <= set(await records(services))

    state.transfer_issue(moved, source, target)
    state.delete_issue(source, doomed)
    clock.offset += 3600  # within the day: the whole listing is not read again
    summary = await sync(services)
    assert issue_checks(state) == 0
    assert summary.deleted == 0
    stored = set(await records(services))
    assert "mona/app-docs#1" in stored  # the moved issue, at its new place
    assert "mona/app#1" in stored

    clock.offset += ISSUE_CHECK_EVERY.total_seconds()
    summary = await sync(services)
    stored = set(await records(services))
    assert "mona/app#1" not in stored  # transferred: the old record is gone
    assert "mona/app#2" not in stored  # deleted
    assert f"mona/app#{kept.number}" in stored
    assert "mona/app-docs#1" in stored
    assert summary.deleted == 2
    checks = issue_checks(state)
    assert checks == 2  # one page for each owned repository

    # The old URL answers as GitHub does: 301 to the new place, 410 for the deleted one.
    headers = {"Authorization": "Bearer gho_test_token_mona"}
    old = await services.http.get(f"{server.url}/repos/mona/app/issues/1", headers=headers)
    assert old.status_code == 301
    assert old.headers["location"].endswith("/repos/mona/app-docs/issues/1")
    gone = await services.http.get(f"{server.url}/repos/mona/app/issues/2", headers=headers)
    assert gone.status_code == 410


async def test_unchanged_issue_listing_costs_only_304s(
    github: tuple[GitHubState, RunningServer],
    services_for: Any,
    clock: ShiftedClock,
) -> None:
    state, server = github
    repo = state.add_repo("mona", "app")
    for n in range(25):
        state.add_issue(repo, f"issue {n}", user="mona")
    services = await services_for(server.url)
    await sync(services)
    clock.offset += ISSUE_CHECK_EVERY.total_seconds() + 1
    await sync(services)  # first whole read: 3 pages of 10
    clock.offset += ISSUE_CHECK_EVERY.total_seconds() + 1
    before = len(state.log)
    summary = await sync(services)
    checked = [r for r in state.log[before:] if "state=all" in r.query and "since=" not in r.query]
    assert [r.status for r in checked] == [304, 304, 304]  # free of rate limit
    assert summary.deleted == 0
    assert len(await records(services)) == 25


async def test_repository_gone_from_the_listing_or_answering_404_loses_its_records(
    github: tuple[GitHubState, RunningServer],
    services_for: Any,
) -> None:
    state, server = github
    repos = {name: state.add_repo("mona", name) for name in ("app", "app2", "lib")}
    for repo in repos.values():
        state.add_commit(repo, f"work in {repo.name}", author="mona", files=[GhFile("a.py")])
        state.add_issue(repo, f"issue in {repo.name}", user="mona")
    services = await services_for(server.url)
    await sync(services)
    assert len(await records(services)) == 6

    repos["app"].deleted = True  # gone from /user/repos, 404 everywhere
    summary = await sync(services)
    stored = set(await records(services))
    assert summary.deleted == 2
    assert not any(k.startswith(("mona/app@", "mona/app#")) for k in stored)
    assert sum(1 for k in stored if k.startswith("mona/app2")) == 2  # same prefix, kept

    shared = state.add_repo("octocat", "shared", collaborators={"mona"})
    state.add_commit(shared, "help out", author="mona", files=[GhFile("c.py")])
    await sync(services)
    assert any(k.startswith("octocat/shared@") for k in await records(services))
    shared.collaborators.clear()  # access lost: public, so it still answers, but not listed
    summary = await sync(services)
    assert summary.deleted == 1
    assert not any(k.startswith("octocat/shared") for k in await records(services))

    repos["lib"].vanishing = True  # still listed, 404 on the repository's own calls
    state.add_commit(repos["lib"], "lost", author="mona", files=[GhFile("b.py")])
    summary = await sync(services)
    stored = set(await records(services))
    assert summary.deleted == 2
    assert not any(k.startswith("mona/lib") for k in stored)
    assert sum(1 for k in stored if k.startswith("mona/app2")) == 2
