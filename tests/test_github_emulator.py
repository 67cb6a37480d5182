"""The GitHub emulator against real payloads: GitHub's OpenAPI examples and recorded traffic.

The npm packages `@octokit/openapi` (GitHub's OpenAPI description with example payloads) and
`@octokit/fixtures` (normalised recordings of real api.github.com traffic) are reference
material, fetched and verified by `uv run python -m tests.reference` (see tests/reference.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion.providers.github.client import classify, next_link
from tests import reference
from tests.emulators.github import GitHubState, create_app, seed_activity
from tests.emulators.server import RunningServer, serve


@pytest.fixture(scope="module")
def examples() -> dict[str, Any]:
    path = reference.require("octokit-openapi") / "generated" / "api.github.com.json"
    spec = json.loads(path.read_text())
    return {name: value["value"] for name, value in spec["components"]["examples"].items()}


@pytest.fixture(scope="module")
def recorded() -> Path:
    return reference.require("octokit-fixtures") / "scenarios" / "api.github.com"


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[GitHubState, RunningServer, httpx.Client]]:
    state = GitHubState()
    state.add_user("mona", token="t0k3n")
    state.add_user("octocat")
    seed_activity(state, "mona", repos=2, commits_per_repo=3, issues_per_repo=6, comment_ratio=1.0)
    server = serve(create_app(state))
    client = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer t0k3n"})
    yield state, server, client
    client.close()
    server.stop()


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def _assert_covers(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """Every key of the real payload is in ours, one level of nesting deep as well."""
    missing = sorted(set(want) - set(got))
    assert not missing, f"{where}: keys missing from the emulator: {missing}"
    for key, value in want.items():
        if isinstance(value, dict) and isinstance(got.get(key), dict):
            nested = sorted(set(value) - set(got[key]))
            assert not nested, f"{where}.{key}: keys missing: {nested}"
        if isinstance(value, list) and value and isinstance(value[0], dict) and got.get(key):
            nested = sorted(set(value[0]) - set(got[key][0]))
            assert not nested, f"{where}.{key}[]: keys missing: {nested}"


def test_emulator_payloads_have_the_keys_of_githubs_openapi_examples(
    examples: dict[str, Any], emulator: tuple[GitHubState, RunningServer, httpx.Client]
) -> None:
    state, _, client = emulator
    repo = state.repos["mona/project-00"]
    pull = next(i for i in repo.issues.values() if i.is_pull)
    issue = next(i for i in repo.issues.values() if not i.is_pull)
    base = f"/repos/{repo.full_name}"
    checks = {
        "/user": "private-user",
        "/user/repos": "repository-items-default-response",
        f"{base}/commits": "commit-items",
        f"{base}/commits/{repo.commits[0].sha}": "commit",
        f"{base}/pulls/{pull.number}": "pull-request",
        f"{base}/issues/{issue.number}/comments": "issue-comment-items",
        f"{base}/pulls/{pull.number}/comments": "pull-request-review-comment-items",
        f"{base}/pulls?state=all": "pull-request-simple-items",
        f"{base}/issues/comments": "issue-comment-items",
        f"{base}/pulls/comments": "pull-request-review-comment-items",
    }
    for path, example in checks.items():
        response = client.get(path)
        assert response.status_code == 200, path
        _assert_covers(_first(response.json()), _first(examples[example]), example)
    # Listings of issues hold issues and PRs: a PR carries the `pull_request` key.
    for path, example in (
        ("/issues?filter=all&state=all&per_page=100", "issue-with-repo-items"),
        (f"{base}/issues?state=all&per_page=100", "issue-items"),
    ):
        items = client.get(path).json()
        as_pr = next(i for i in items if "pull_request" in i)
        _assert_covers(as_pr, _first(examples[example]), example)
        assert any("pull_request" not in i for i in items)


def test_pull_listing_is_the_list_form_of_a_pull_request(
    examples: dict[str, Any], emulator: tuple[GitHubState, RunningServer, httpx.Client]
) -> None:
    """The list form carries no counts and no `merged`, like GitHub's `pull-request-simple`."""
    _, _, client = emulator
    detail_only = set(_first(examples["pull-request"])) - set(
        _first(examples["pull-request-simple-items"])
    )
    assert {"merged", "review_comments", "comments"} <= detail_only
    listed = client.get("/repos/mona/project-00/pulls", params={"state": "all"}).json()
    assert listed
    assert not detail_only & set(listed[0])


def test_repository_wide_listings_honour_since_sort_direction_and_paging(
    emulator: tuple[GitHubState, RunningServer, httpx.Client],
) -> None:
    state, _, client = emulator
    repo = state.repos["mona/project-00"]
    base = f"/repos/{repo.full_name}"
    pulls = [i for i in repo.issues.values() if i.is_pull]
    everything = client.get(f"{base}/pulls", params={"state": "all"}).json()
    assert len(everything) == len(pulls)
    # Default sort `created` is newest first; `updated` defaults to ascending.
    assert [p["number"] for p in everything] == sorted((p.number for p in pulls), reverse=True)
    asc = client.get(f"{base}/pulls", params={"state": "all", "sort": "updated"}).json()
    assert [p["updated_at"] for p in asc] == sorted(p["updated_at"] for p in asc)
    first = client.get(
        f"{base}/pulls",
        params={"state": "all", "sort": "updated", "direction": "desc", "per_page": 1},
    )
    assert len(first.json()) == 1
    nxt = next_link(first.headers["link"])
    assert nxt is not None
    assert nxt.startswith(f"{client.base_url}/repositories/{repo.id}/pulls?")
    assert "page=2" in nxt
    again = client.get(nxt)
    assert again.json()[0]["number"] != first.json()[0]["number"]
    assert client.get(f"{base}/pulls", params={"state": "nope"}).status_code == 422

    comments = [(i, c) for i in repo.issues.values() for c in i.comments]
    listed = client.get(f"{base}/issues/comments", params={"per_page": 100}).json()
    assert [c["id"] for c in listed] == sorted(c.id for _, c in comments)  # ascending ids
    assert {c["issue_url"].rsplit("/", 1)[1] for c in listed} == {
        str(i.number) for i, _ in comments
    }
    newest = max(c.updated_at for _, c in comments)
    recent = client.get(
        f"{base}/issues/comments",
        params={"since": newest.strftime("%Y-%m-%dT%H:%M:%SZ"), "sort": "updated"},
    ).json()
    assert recent
    assert all(c["updated_at"] >= newest.strftime("%Y-%m-%dT%H:%M:%SZ") for c in recent)
    desc = client.get(
        f"{base}/pulls/comments", params={"sort": "updated", "direction": "desc"}
    ).json()
    assert [c["updated_at"] for c in desc] == sorted((c["updated_at"] for c in desc), reverse=True)
    assert all(c["pull_request_url"].startswith(f"{client.base_url}{base}/pulls/") for c in desc)
    paged = client.get(f"{base}/pulls/comments", params={"per_page": 1})
    assert 'rel="next"' in paged.headers["link"]
    etag = paged.headers["etag"]
    assert (
        client.get(
            f"{base}/pulls/comments", params={"per_page": 1}, headers={"If-None-Match": etag}
        ).status_code
        == 304
    )


def test_emulator_pagination_and_headers_match_recorded_traffic(
    recorded: Path, emulator: tuple[GitHubState, RunningServer, httpx.Client]
) -> None:
    state, _, client = emulator
    real = json.loads((recorded / "paginate-issues" / "normalized-fixture.json").read_text())
    first, second = real[0], real[1]
    real_link = first["headers"]["link"]
    # Real "next" links leave /repos/{owner}/{repo} for /repositories/{id}, keeping the query.
    assert "/repositories/" in next_link(real_link)
    assert "per_page=3" in next_link(real_link)

    repo = state.repos["mona/project-00"]
    state.issue_cursor_pagination = False  # as recorded in 2017
    try:
        response = client.get(f"/repos/{repo.full_name}/issues", params={"per_page": 2})
        followed = client.get(next_link(response.headers["link"]))
    finally:
        state.issue_cursor_pagination = True
    link = response.headers["link"]
    assert next_link(link) == f"{client.base_url}/repositories/{repo.id}/issues?per_page=2&page=2"
    assert {p.split("rel=")[1] for p in link.split(", ")} == {
        p.split("rel=")[1] for p in real_link.split(", ")
    }
    real_second_rels = {p.split("rel=")[1] for p in second["headers"]["link"].split(", ")}
    assert {p.split("rel=")[1] for p in followed.headers["link"].split(", ")} == real_second_rels

    for header in ("etag", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert header in first["headers"]
        assert header in response.headers
    real_issue = first["response"][0]
    ours = response.json()[0]
    assert set(real_issue) - {"pull_request"} <= set(ours)
    assert first["headers"]["etag"].startswith('"')  # strong ETags, like ours
    assert response.headers["etag"].startswith('"')

    # Today GitHub pages repository issues with `after` cursors; the query is kept.
    cursor_page = client.get(f"/repos/{repo.full_name}/issues", params={"per_page": 4})
    after = next_link(cursor_page.headers["link"])
    assert after.startswith(f"{client.base_url}/repositories/{repo.id}/issues?per_page=4&after=")
    rest = client.get(after)
    assert "link" not in rest.headers
    numbers = [i["number"] for i in cursor_page.json() + rest.json()]
    assert sorted(numbers) == sorted(repo.issues)


def test_error_shapes_match_recorded_traffic(
    recorded: Path, emulator: tuple[GitHubState, RunningServer, httpx.Client]
) -> None:
    _, server, client = emulator
    real = json.loads((recorded / "errors" / "normalized-fixture.json").read_text())
    real_error = next(r for r in real if r["status"] >= 400)["response"]
    assert {"message", "documentation_url"} <= set(real_error)

    bad = httpx.get(f"{server.url}/user", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"
    assert set(bad.json()) == {"message", "documentation_url"}
    missing = client.get("/repos/mona/does-not-exist/commits")
    assert missing.status_code == 404
    assert set(missing.json()) == {"message", "documentation_url"}


def test_conditional_requests_and_rate_limits(
    emulator: tuple[GitHubState, RunningServer, httpx.Client],
) -> None:
    state, _, client = emulator
    first = client.get("/user/repos")
    remaining = int(first.headers["x-ratelimit-remaining"])
    again = client.get("/user/repos", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert int(again.headers["x-ratelimit-remaining"]) == remaining
    changed = client.get("/user/repos", headers={"If-None-Match": '"stale"'})
    assert changed.status_code == 200
    assert int(changed.headers["x-ratelimit-remaining"]) == remaining - 1

    state.exhaust("mona", reset_in=1800)
    try:
        limited = client.get("/user")
        assert limited.status_code == 403
        assert limited.headers["x-ratelimit-remaining"] == "0"
        throttle = classify(limited, now=float(limited.headers["x-ratelimit-reset"]) - 1800)
        assert throttle is not None
        assert throttle.rate_limited
        assert throttle.retry_after == pytest.approx(1801, abs=1)
    finally:
        state.windows.clear()

    state.secondary_limit_requests = 1
    state.secondary_retry_after = None
    secondary = client.get("/user")
    assert secondary.status_code == 403
    assert "secondary rate limit" in secondary.json()["message"]
    throttle = classify(secondary)
    assert throttle is not None
    assert throttle.retry_after is not None
    assert throttle.retry_after >= 60


@pytest.fixture
def own_emulator() -> Iterator[tuple[GitHubState, RunningServer, httpx.Client]]:
    """An emulator of its own (the module's shared one must not see force-pushes)."""
    state = GitHubState()
    state.add_user("mona", token="t0k3n")
    seed_activity(state, "mona", repos=1, commits_per_repo=3, issues_per_repo=0)
    server = serve(create_app(state))
    client = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer t0k3n"})
    yield state, server, client
    client.close()
    server.stop()


def test_compare_and_commit_listing_follow_the_commit_graph(
    own_emulator: tuple[GitHubState, RunningServer, httpx.Client],
) -> None:
    """`compare/{base}...{head}` (REST "Compare two commits"): status, counts, merge base,
    commits reachable from head but not from the merge base in chronological order, files on
    the first page only; the commits listing starts at the branch head whatever its date."""
    state, _, client = own_emulator
    repo = state.repos["mona/project-00"]
    old_head = repo.head
    assert old_head is not None
    root = repo.commits[-1].sha
    now = state.now()
    tip = state.branch(
        repo,
        root,
        ["side 1", "side 2"],
        author="mona",
        dates=[now - timedelta(days=9), now - timedelta(days=8)],
    )
    merge = state.merge(repo, tip, author="mona")
    late = state.add_commit(repo, "late", author="mona", date=now - timedelta(days=5)).sha
    base = "/repos/mona/project-00"

    ahead = client.get(f"{base}/compare/{old_head}...main").json()
    assert (ahead["status"], ahead["ahead_by"], ahead["behind_by"]) == ("ahead", 4, 0)
    assert ahead["merge_base_commit"]["sha"] == old_head
    assert [c["commit"]["message"] for c in ahead["commits"]] == [
        "side 1",
        "side 2",
        "late",
        "Merge branch",
    ]  # chronological, not topological
    assert {c["sha"] for c in ahead["commits"]} >= {merge, late}
    assert ahead["files"]
    assert client.get(f"{base}/compare/main...{old_head}").json()["status"] == "behind"
    assert client.get(f"{base}/compare/main...main").json()["status"] == "identical"

    paged = client.get(f"{base}/compare/{old_head}...main", params={"per_page": 3})
    assert len(paged.json()["commits"]) == 3
    assert 'rel="next"' in paged.headers["link"]
    second = client.get(next_link(paged.headers["link"]) or "")
    assert "files" not in second.json()
    assert len(second.json()["commits"]) == 1

    listed = client.get(f"{base}/commits", params={"sha": "main", "per_page": 1}).json()
    assert listed[0]["sha"] == late  # the head first, though older than the merge

    rewritten = state.branch(repo, root, ["rewritten"], author="mona", dates=[now])
    state.force_push(repo, rewritten)
    diverged = client.get(f"{base}/compare/{late}...main").json()
    assert diverged["status"] == "diverged"
    assert diverged["merge_base_commit"]["sha"] == root
    assert [c["commit"]["message"] for c in diverged["commits"]] == ["rewritten"]
    state.force_push(repo, rewritten, forget=True)
    assert client.get(f"{base}/compare/{late}...main").status_code == 404
