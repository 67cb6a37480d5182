"""GitHub payloads → memory records (design §6).

- A commit (`type` commit, `sourceId` `owner/repo@sha`): title = subject line; content = the
  full message, then a change summary (every file with its status and +/- counts), then patch
  text up to `GITHUB_PATCH_BUDGET_BYTES` per commit (UTF-8 bytes). Binary files (no `patch`) and
  generated files (lock files, minified or vendored code, snapshots…) are listed but never
  inlined; a patch that does not fit is left out whole and named in a closing line.
- An issue or pull request (`type` issue | pull_request, told apart by the `pull_request` key;
  `sourceId` `owner/repo#number`): content = body, then the conversation (issue comments in
  order; for PRs, review comments summarised as `path:line` and a short body).
- Hostile input stays cheap: a message or body is read up to `TEXT_MAX_CHARS` characters
  (`ingestion.providers.limits`), a patch larger than the budget is never encoded, and every
  step is linear in the payload.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ingestion.memory.record import MemoryRecord
from ingestion.providers.github.sync import parse_time
from ingestion.providers.limits import cap, item_transform

__all__ = [
    "GENERATED_PATTERNS",
    "commit_record",
    "is_generated",
    "issue_record",
]

#: Files whose diff says nothing a person wrote: listed, never inlined.
GENERATED_PATTERNS = (
    "*.lock",
    "*-lock.json",
    "*-lock.yaml",
    "*.lockb",
    "go.sum",
    "*.min.js",
    "*.min.css",
    "*.map",
    "*.snap",
    "*.pb.go",
    "*_pb2.py",
    "*.generated.*",
    "vendor/*",
    "node_modules/*",
    "dist/*",
)
#: At most this many files are described one by one in content and metadata.
MAX_LISTED_FILES = 300
REVIEW_COMMENT_CHARS = 280


def is_generated(filename: str) -> bool:
    """Lock files, minified, vendored and generated code (matched on the lower-cased path)."""
    name = filename.lower()
    base = name.rsplit("/", 1)[-1]
    for pattern in GENERATED_PATTERNS:
        if pattern.endswith("/*"):
            folder = pattern[:-1]
            if name.startswith(folder) or f"/{folder}" in name:
                return True
        elif fnmatch.fnmatchcase(base, pattern):
            return True
    return False


def _login(user: Any) -> str | None:
    return str(user["login"]) if isinstance(user, Mapping) and user.get("login") else None


def _when(value: Any) -> datetime:
    return parse_time(value if isinstance(value, str) else None) or datetime.fromtimestamp(0, UTC)


_STATUS = {"added": "A", "removed": "D", "modified": "M", "renamed": "R", "copied": "C"}


def _change_summary(files: Sequence[Mapping[str, Any]], budget: int) -> str:
    if not files:
        return ""
    additions = sum(int(f.get("additions") or 0) for f in files)
    deletions = sum(int(f.get("deletions") or 0) for f in files)
    lines = [f"Changed files ({len(files)}, +{additions} -{deletions}):"]
    for f in files[:MAX_LISTED_FILES]:
        mark = _STATUS.get(str(f.get("status")), "M")
        name = str(f.get("filename"))
        if f.get("previous_filename"):
            name = f"{f['previous_filename']} -> {name}"
        note = ""
        if f.get("patch") is None:
            note = " [binary or too large, not shown]"
        elif is_generated(str(f.get("filename"))):
            note = " [generated, not shown]"
        lines.append(f"{mark} {name} (+{f.get('additions', 0)} -{f.get('deletions', 0)}){note}")
    if len(files) > MAX_LISTED_FILES:
        lines.append(f"… and {len(files) - MAX_LISTED_FILES} more files")
    patches: list[str] = []
    left_out: list[str] = []
    used = 0
    for f in files:
        patch = f.get("patch")
        name = str(f.get("filename"))
        if not isinstance(patch, str) or is_generated(name):
            continue
        if used + len(patch) > budget:  # a character is at least one byte: no need to encode
            left_out.append(name)
            continue
        block = f"--- {name}\n{patch}\n"
        size = len(block.encode("utf-8"))
        if used + size > budget:
            left_out.append(name)
            continue
        used += size
        patches.append(block)
    text = "\n".join(lines)
    if patches:
        text += "\n\n" + "\n".join(patches).rstrip("\n")
    if left_out:
        shown = ", ".join(left_out[:20]) + (" …" if len(left_out) > 20 else "")
        text += f"\n\n[patches not shown, over the {budget}-byte budget: {shown}]"
    return text


@item_transform
def commit_record(
    *,
    user_id: str,
    repo: str,
    commit: Mapping[str, Any],
    files: Sequence[Mapping[str, Any]] | None,
    patch_budget: int,
    branch: str | None = None,
) -> MemoryRecord:
    """One commit; `files` None when the details could not be read (message only)."""
    sha = str(commit["sha"])
    inner: Mapping[str, Any] = commit.get("commit") or {}
    message, omitted = cap(str(inner.get("message") or ""))
    author: Mapping[str, Any] = inner.get("author") or {}
    committer: Mapping[str, Any] = inner.get("committer") or {}
    listed = list(files or [])
    stats: Mapping[str, Any] = commit.get("stats") or {}
    additions = int(stats.get("additions") or sum(int(f.get("additions") or 0) for f in listed))
    deletions = int(stats.get("deletions") or sum(int(f.get("deletions") or 0) for f in listed))
    summary = _change_summary(listed, patch_budget)
    content = message + (f"\n\n{summary}" if summary else "")
    metadata: dict[str, Any] = {
        "repo": repo,
        "sha": sha,
        "branch": branch,
        "author": {
            "name": author.get("name"),
            "email": author.get("email"),
            "login": _login(commit.get("author")),
        },
        "committer": {"name": committer.get("name"), "login": _login(commit.get("committer"))},
        "committedAt": committer.get("date"),
        "parents": [p.get("sha") for p in commit.get("parents") or [] if isinstance(p, Mapping)],
        "additions": additions,
        "deletions": deletions,
        "files": [
            {
                "filename": f.get("filename"),
                "status": f.get("status"),
                "additions": f.get("additions", 0),
                "deletions": f.get("deletions", 0),
            }
            for f in listed[:MAX_LISTED_FILES]
        ],
    }
    if len(listed) > MAX_LISTED_FILES:
        metadata["filesOmitted"] = len(listed) - MAX_LISTED_FILES
    if files is None:
        metadata["detailsMissing"] = True
    return MemoryRecord.build(
        source="github",
        user_id=user_id,
        source_id=f"{repo}@{sha}",
        type="commit",
        title=message.split("\n", 1)[0].strip() or sha[:12],
        content=content,
        occurred_at=_when(author.get("date") or committer.get("date")),
        url=commit.get("html_url"),
        metadata=metadata,
        content_omitted=omitted,
    )


def _conversation(
    comments: Sequence[Mapping[str, Any]], review_comments: Sequence[Mapping[str, Any]]
) -> str:
    parts: list[str] = []
    if comments:
        parts.append("Comments:")
        for c in comments:
            who = _login(c.get("user")) or "ghost"
            parts.append(f"@{who} ({c.get('created_at')}):\n{(c.get('body') or '').strip()}")
    if review_comments:
        parts.append(f"Review comments ({len(review_comments)}):")
        for c in review_comments:
            who = _login(c.get("user")) or "ghost"
            where = str(c.get("path") or "")
            line = c.get("line") or c.get("original_line")
            if line:
                where += f":{line}"
            body = " ".join(str(c.get("body") or "").split())
            if len(body) > REVIEW_COMMENT_CHARS:
                body = body[: REVIEW_COMMENT_CHARS - 1] + "…"
            parts.append(f"- @{who} on {where}: {body}")
    return "\n\n".join(parts)


@item_transform
def issue_record(
    *,
    user_id: str,
    repo: str,
    issue: Mapping[str, Any],
    pull: Mapping[str, Any] | None = None,
    comments: Sequence[Mapping[str, Any]] = (),
    review_comments: Sequence[Mapping[str, Any]] = (),
) -> MemoryRecord:
    """One issue or pull request (a PR when the issue has the `pull_request` key)."""
    number = int(issue["number"])
    is_pull = "pull_request" in issue and issue.get("pull_request") is not None
    body, omitted = cap(str(issue.get("body") or "").strip())
    conversation = _conversation(comments, review_comments)
    content = body + (f"\n\n{conversation}" if conversation else "")
    metadata: dict[str, Any] = {
        "repo": repo,
        "number": number,
        "state": issue.get("state"),
        "stateReason": issue.get("state_reason"),
        "author": _login(issue.get("user")),
        "labels": sorted(
            str(label.get("name") if isinstance(label, Mapping) else label)
            for label in issue.get("labels") or []
        ),
        "assignees": sorted(
            a for a in (_login(x) for x in issue.get("assignees") or []) if a is not None
        ),
        "createdAt": issue.get("created_at"),
        "updatedAt": issue.get("updated_at"),
        "closedAt": issue.get("closed_at"),
        "comments": int(issue.get("comments") or 0),
    }
    if is_pull:
        pr_link: Mapping[str, Any] = issue.get("pull_request") or {}
        source = pull or {}
        merged_at = source.get("merged_at") or pr_link.get("merged_at")
        metadata.update(
            {
                "merged": bool(source.get("merged", merged_at is not None)),
                "mergedAt": merged_at,
                "draft": bool(source.get("draft", issue.get("draft", False))),
                "baseRef": (source.get("base") or {}).get("ref"),
                "headRef": (source.get("head") or {}).get("ref"),
                "reviewComments": int(source["review_comments"] or 0)
                if "review_comments" in source
                else len(review_comments),
            }
        )
    return MemoryRecord.build(
        source="github",
        user_id=user_id,
        source_id=f"{repo}#{number}",
        type="pull_request" if is_pull else "issue",
        title=str(issue.get("title") or f"#{number}"),
        content=content,
        occurred_at=_when(issue.get("created_at")),
        url=issue.get("html_url"),
        metadata=metadata,
        content_omitted=omitted,
    )
