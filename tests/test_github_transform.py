"""GitHub payloads → memory records: bounded diffs, generated and binary files, conversations."""

from __future__ import annotations

from typing import Any

from ingestion.providers.github.sync import StreamCursor, repo_selected
from ingestion.providers.github.transform import commit_record, is_generated, issue_record


def _commit(
    files: list[dict[str, Any]], message: str = "Fix the parser\n\nIt choked on tabs."
) -> dict[str, Any]:
    person = {"name": "Mona", "email": "mona@example.com", "date": "2026-01-02T03:04:05Z"}
    return {
        "sha": "a" * 40,
        "html_url": "https://github.com/mona/app/commit/" + "a" * 40,
        "commit": {"message": message, "author": person, "committer": person},
        "author": {"login": "mona"},
        "committer": {"login": "mona"},
        "parents": [{"sha": "b" * 40}],
        "files": files,
    }


def _file(name: str, patch: str | None, status: str = "modified") -> dict[str, Any]:
    return {"filename": name, "status": status, "additions": 2, "deletions": 1, "patch": patch}


def test_commit_content_is_message_then_summary_then_patches_within_budget() -> None:
    files = [
        _file("src/a.py", "@@ -1 +1 @@\n-" + "x" * 60 + "\n+" + "y" * 60),
        _file("src/b.py", "@@ -1 +1 @@\n-" + "p" * 60 + "\n+" + "q" * 60),
        _file("uv.lock", "@@ lock @@\n+hash"),
        _file("logo.png", None, status="added"),
    ]
    record = commit_record(
        user_id="u1", repo="mona/app", commit=_commit(files), files=files, patch_budget=200
    )

    assert record.source_id == "mona/app@" + "a" * 40
    assert record.type == "commit"
    assert record.title == "Fix the parser"
    assert record.content.startswith(
        "Fix the parser\n\nIt choked on tabs.\n\nChanged files (4, +8 -4):"
    )
    assert "M src/a.py (+2 -1)\n" in record.content
    assert "M uv.lock (+2 -1) [generated, not shown]" in record.content
    assert "A logo.png (+2 -1) [binary or too large, not shown]" in record.content
    assert "--- src/a.py\n@@ -1 +1 @@" in record.content
    assert "--- src/b.py" not in record.content
    assert "over the 200-byte budget: src/b.py" in record.content
    assert "@@ lock @@" not in record.content
    assert record.url == "https://github.com/mona/app/commit/" + "a" * 40
    assert record.occurred_at.isoformat() == "2026-01-02T03:04:05+00:00"
    meta = record.metadata
    assert meta["repo"] == "mona/app"
    assert meta["sha"] == "a" * 40
    assert meta["author"] == {"name": "Mona", "email": "mona@example.com", "login": "mona"}
    assert (meta["additions"], meta["deletions"]) == (8, 4)
    assert meta["files"][0] == {
        "filename": "src/a.py",
        "status": "modified",
        "additions": 2,
        "deletions": 1,
    }


def test_commit_with_a_zero_budget_lists_files_only() -> None:
    files = [_file("a.py", "@@ -1 +1 @@\n+z")]
    record = commit_record(
        user_id="u1", repo="o/r", commit=_commit(files), files=files, patch_budget=0
    )
    assert "M a.py (+2 -1)" in record.content
    assert "@@ -1 +1 @@" not in record.content


def test_generated_files() -> None:
    for name in (
        "poetry.lock",
        "package-lock.json",
        "pnpm-lock.yaml",
        "go.sum",
        "web/app.min.js",
        "vendor/lib/x.go",
        "src/vendor/y.c",
        "api_pb2.py",
        "Cargo.lock",
    ):
        assert is_generated(name), name
    for name in ("src/lock.py", "README.md", "vendors.py", "docs/go.summary"):
        assert not is_generated(name), name


def test_pull_request_record_has_conversation_and_pr_metadata() -> None:
    issue = {
        "number": 7,
        "title": "Faster parser",
        "body": "Makes it faster.",
        "state": "closed",
        "user": {"login": "mona"},
        "labels": [{"name": "perf"}],
        "assignees": [{"login": "hubot"}],
        "created_at": "2026-02-01T00:00:00Z",
        "updated_at": "2026-02-03T00:00:00Z",
        "closed_at": "2026-02-03T00:00:00Z",
        "comments": 1,
        "html_url": "https://github.com/mona/app/pull/7",
        "pull_request": {"url": "https://api.github.com/repos/mona/app/pulls/7"},
    }
    pull = {
        "merged": True,
        "merged_at": "2026-02-03T00:00:00Z",
        "draft": False,
        "base": {"ref": "main"},
        "head": {"ref": "speed"},
        "review_comments": 1,
    }
    comments = [{"user": {"login": "hubot"}, "created_at": "2026-02-02T00:00:00Z", "body": "LGTM"}]
    reviews = [{"user": {"login": "hubot"}, "path": "src/p.py", "line": 12, "body": "why " * 200}]

    record = issue_record(
        user_id="u1",
        repo="mona/app",
        issue=issue,
        pull=pull,
        comments=comments,
        review_comments=reviews,
    )

    assert record.type == "pull_request"
    assert record.source_id == "mona/app#7"
    assert record.content.startswith(
        "Makes it faster.\n\nComments:\n\n@hubot (2026-02-02T00:00:00Z):\nLGTM"
    )
    assert "- @hubot on src/p.py:12: why why" in record.content
    assert len(record.content) < 1000  # review comments are summarised
    meta = record.metadata
    assert meta["merged"] is True
    assert (meta["baseRef"], meta["headRef"], meta["draft"]) == ("main", "speed", False)
    assert (meta["labels"], meta["assignees"], meta["author"]) == (["perf"], ["hubot"], "mona")
    assert meta["closedAt"] == "2026-02-03T00:00:00Z"


def test_issue_record_without_pull_request_key_is_an_issue() -> None:
    issue = {
        "number": 1,
        "title": "Bug",
        "body": None,
        "state": "open",
        "user": {"login": "x"},
        "labels": [],
        "assignees": [],
        "created_at": "2026-01-01T00:00:00Z",
    }
    record = issue_record(user_id="u1", repo="o/r", issue=issue)
    assert record.type == "issue"
    assert "merged" not in record.metadata
    assert record.content == ""


def test_repository_patterns_and_cursor_window() -> None:
    assert repo_selected("Mona/App", "mona/*", "")
    assert not repo_selected("acme/app", "mona/*", "")
    assert not repo_selected("mona/secret", "", "*/secret*")
    cursor = StreamCursor(since="2026-01-01T00:00:00Z", seen={"1": "2026-01-01T00:00:00Z"})
    assert not cursor.is_new("1", "2026-01-01T00:00:00Z")
    assert cursor.is_new("1", "2026-01-02T00:00:00Z")
    assert StreamCursor.load(cursor.dump()) == cursor
