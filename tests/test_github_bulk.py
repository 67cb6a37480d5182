"""Repository-wide listings in place of per-item calls: same records, fewer requests.

Each test runs the real `SyncEngine` on its own SQLite database against its own GitHub emulator
(helpers shared with `test_github_sync.py`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestion.providers.github import conversations
from ingestion.services import Services
from tests.emulators.github import GhFile, GitHubState, LoggedRequest, create_app, seed_activity
from tests.emulators.server import RunningServer, serve
from tests.test_github_sync import TOKEN, ShiftedClock, open_services, records, sync

PER_ITEM = r"^/repos/[^/]+/[^/]+/(pulls/\d+|issues/\d+/comments|pulls/\d+/comments)$"
BULK = r"^/(repos/[^/]+/[^/]+|repositories/\d+)/(pulls|issues/comments|pulls/comments)$"


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


@pytest.fixture
async def services_for(tmp_path: Path, clock: ShiftedClock) -> AsyncIterator[Any]:
    opened: list[Services] = []

    async def factory(api_url: str, name: str = "ingestion", **overrides: Any) -> Services:
        services = await open_services(
            tmp_path, api_url, clock, database_url=f"sqlite:///{tmp_path / name}.db", **overrides
        )
        opened.append(services)
        return services

    yield factory
    for services in opened:
        await services.aclose()


def _matching(log: list[LoggedRequest], pattern: str) -> list[LoggedRequest]:
    return [r for r in log if re.search(pattern, r.path)]


async def _snapshot(services: Services) -> dict[str, tuple[Any, ...]]:
    return {
        k: (r.type, r.title, r.content, r.meta, r.url, r.content_hash)
        for k, r in (await records(services)).items()
    }


def _busy_conversations(state: GitHubState, clock: ShiftedClock) -> None:
    """Several comments and review comments on some items, a second apart."""
    for repo in state.repos.values():
        for number, issue in sorted(repo.issues.items()):
            clock.offset += 1
            if number % 3 == 0:
                state.add_comment(issue, "octocat", f"Second thought on {number}")
                state.add_comment(issue, "mona", f"Reply on {number}")
            if issue.is_pull and number % 2 == 1:
                state.add_comment(
                    issue, "octocat", f"Use a constant ({number})", review=True, path="a.py", line=9
                )
            if issue.is_pull and number % 5 == 0:
                state.merge_pull(issue)
                issue.draft = number % 10 == 0


@pytest.mark.parametrize(
    "limits",
    [{}, {"MAX_BULK_PAGES": 1}],
    ids=["bulk", "bulk-cut-at-one-page"],
)
async def test_bulk_listings_give_the_same_records_as_per_item_calls(
    github: tuple[GitHubState, RunningServer],
    services_for: Any,
    clock: ShiftedClock,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
) -> None:
    state, server = github
    seed_activity(state, "mona", repos=3, commits_per_repo=2, issues_per_repo=30, comment_ratio=0.5)
    _busy_conversations(state, clock)

    with monkeypatch.context() as patch:
        patch.setattr(conversations, "BULK_MIN_ITEMS", 10**6)
        # Every organisation issue as well, so `/issues` items take the bulk path too.
        reference = await services_for(server.url, "per_item", github_issues_filter="all")
        await sync(reference)
    per_item_log = list(state.log)
    state.log.clear()
    for name, value in limits.items():
        monkeypatch.setattr(conversations, name, value)
    bulk = await services_for(server.url, "bulk", github_issues_filter="all")
    summary = await sync(bulk)

    expected = await _snapshot(reference)
    got = await _snapshot(bulk)
    assert summary.status == "ok"
    assert len(got) == 3 * 2 + 3 * 30
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key], key
    # The conversation really is in the records (not two equally empty syncs).
    pulls = [v for v in got.values() if v[0] == "pull_request"]
    assert any("Review comments (2):" in v[2] for v in pulls)
    assert any(v[3]["merged"] for v in pulls)
    assert any("Reply on" in v[2] for v in got.values())

    assert not _matching(per_item_log, BULK)
    assert _matching(state.log, BULK)
    per_item_calls = len(_matching(per_item_log, PER_ITEM))
    if not limits:
        # Every item of the window came through the repository-wide listings.
        assert len(_matching(state.log, PER_ITEM)) <= per_item_calls // 10
        assert len(state.log) * 2 < len(per_item_log)
    else:
        # Cut listings: items they cannot vouch for fall back to their own calls.
        assert 0 < len(_matching(state.log, PER_ITEM)) < per_item_calls


async def test_new_comments_on_existing_issues_update_their_records_through_the_bulk_path(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    state, server = github
    repo = state.add_repo("mona", "notes")
    state.add_commit(repo, "Initial commit", author="mona", files=[GhFile("README.md")])
    earlier = state.now() - timedelta(days=2)
    issues = [
        state.add_issue(repo, f"Issue {n}", user="mona", created_at=earlier + timedelta(hours=n))
        for n in range(4)
    ]
    pulls = [
        state.add_issue(
            repo, f"Pull {n}", user="mona", is_pull=True, created_at=earlier, head_ref=f"b{n}"
        )
        for n in range(3)
    ]
    for issue in issues:
        state.add_comment(issue, "octocat", f"First look at {issue.title}")
    for pull in pulls:
        state.add_comment(pull, "octocat", f"Old nit on {pull.title}", review=True, path="x.py")
    services = await services_for(server.url)
    await sync(services)
    before = await records(services)
    assert before["mona/notes#5"].meta["merged"] is False

    clock.offset += 60
    for issue in issues[:2]:
        state.add_comment(issue, "octocat", f"New finding on {issue.title}")
    for pull in pulls[:2]:
        state.add_comment(pull, "mona", f"New nit on {pull.title}", review=True, path="y.py")
    state.merge_pull(pulls[0])
    state.merge_pull(pulls[1])
    issues[2].body = "Edited description"
    state.touch(issues[2])
    mark = len(state.log)
    summary = await sync(services)

    after = await records(services)
    second = state.log[mark:]
    assert summary.upserted == 5
    edited = after[f"mona/notes#{issues[2].number}"].content
    assert "Edited description" in edited
    assert f"First look at {issues[2].title}" in edited  # its older comment, still there
    for issue in issues[:2]:
        content = after[f"mona/notes#{issue.number}"].content
        # The older comment (before the cursor) and the new one, in order.
        assert content.index(f"First look at {issue.title}") < content.index("New finding on")
    for pull in pulls[:2]:
        record = after[f"mona/notes#{pull.number}"]
        assert record.meta["merged"] is True
        assert record.meta["state"] == "closed"
        assert record.meta["reviewComments"] == 2
        assert f"Old nit on {pull.title}" in record.content
        assert f"New nit on {pull.title}" in record.content
    for untouched in (issues[3], pulls[2]):
        key = f"mona/notes#{untouched.number}"
        assert after[key].content_hash == before[key].content_hash
    # Through the repository-wide listings: no per-issue or per-PR call.
    assert _matching(second, r"^/repos/mona/notes/issues/comments$")
    assert _matching(second, r"^/repos/mona/notes/pulls/comments$")
    assert _matching(second, r"^/repos/mona/notes/pulls$")
    assert not _matching(second, PER_ITEM)

    mark = len(state.log)
    again = await sync(services)
    assert {r.status for r in state.log[mark:]} == {304}
    assert again.stats["rateLimitUnits"] == 0


async def test_single_changed_item_uses_its_own_calls(
    github: tuple[GitHubState, RunningServer], services_for: Any, clock: ShiftedClock
) -> None:
    """One item needs fewer requests than a repository-wide listing: none is asked."""
    state, server = github
    repo = state.add_repo("mona", "solo")
    state.add_commit(repo, "Initial commit", author="mona", files=[GhFile("README.md")])
    issue = state.add_issue(repo, "Only one", user="mona")
    state.add_comment(issue, "octocat", "First")
    services = await services_for(server.url)
    await sync(services)
    clock.offset += 60
    state.add_comment(issue, "octocat", "Second")
    mark = len(state.log)

    await sync(services)

    second = state.log[mark:]
    assert "First" in (await records(services))["mona/solo#1"].content
    assert "Second" in (await records(services))["mona/solo#1"].content
    assert not _matching(second, BULK)
    assert [r.path for r in _matching(second, PER_ITEM)] == ["/repos/mona/solo/issues/1/comments"]


def test_an_index_vouches_only_for_versions_it_can_have_seen() -> None:
    """Listed before the read at that `updated_at`, or changed before something the read saw."""
    index = conversations.Index(
        kind="comments",
        entries={1: [{"id": 1}], 2: [{"id": 2}]},
        listed={1: "2026-01-01T10:00:00Z"},
        watermark=datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
        reach=datetime(2025, 12, 1, tzinfo=UTC),
    )
    item = {"number": 1, "updated_at": "2026-01-01T10:00:00Z", "comments": 1}
    assert index.answer(item) == [{"id": 1}]
    # The same issue changed after the read (it came back with a newer stamp): not vouched.
    assert index.answer({**item, "updated_at": "2026-01-01T10:05:00Z", "comments": 2}) is None
    # Never listed, last changed before the watermark: vouched; at the watermark: not.
    other = {"number": 2, "updated_at": "2026-01-01T08:59:59Z", "comments": 1}
    assert index.answer(other) == [{"id": 2}]
    assert index.answer({**other, "updated_at": "2026-01-01T09:00:00Z"}) is None
    # A count that does not match what the listing holds: not vouched.
    assert index.answer({**other, "comments": 3}) is None
    reviews = conversations.Index(
        kind="reviews",
        entries={},
        listed={4: "2026-01-01T10:00:00Z", 5: "2026-01-01T10:00:00Z"},
        reach=datetime(2025, 12, 1, tzinfo=UTC),
        cut=True,
    )
    pr = {"number": 4, "updated_at": "2026-01-01T10:00:00Z", "pull_request": {}}
    assert reviews.answer({**pr, "created_at": "2025-12-02T00:00:00Z"}) == []
    # Created before what a cut listing read completely: its review comments may be missing.
    assert reviews.answer({**pr, "number": 5, "created_at": "2025-12-01T00:00:00Z"}) is None
