"""Payloads of the GitHub emulator, with the keys of GitHub's OpenAPI examples.

Each builder is a pure function of the emulator's state objects (`tests/emulators/github.py`);
`tests/test_github_emulator.py` checks their keys against `@octokit/openapi` examples and
`@octokit/fixtures` recordings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.emulators.github import GhComment, GhCommit, GhFile, GhIssue, GhRepo, GitHubState

__all__ = [
    "DETAIL_ONLY_PULL_KEYS",
    "comment_payload",
    "commit_payload",
    "file_payload",
    "issue_payload",
    "label_payload",
    "private_user",
    "pull_payload",
    "pull_simple_payload",
    "repo_payload",
    "review_comment_payload",
    "simple_user",
]


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cached(
    state: GitHubState, key: tuple[Any, ...], build: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Payloads are pure functions of their key; building them is much of a request's cost."""
    cache = state.payload_cache
    if key not in cache:
        if len(cache) > 50_000:
            cache.clear()
        cache[key] = build()
    return cache[key]


def simple_user(state: GitHubState, login: str, api: str) -> dict[str, Any]:
    return _cached(state, ("user", login, api), lambda: _simple_user(state, login, api))


def _simple_user(state: GitHubState, login: str, api: str) -> dict[str, Any]:
    user = state.users.get(login) or {"id": abs(hash(login)) % 10**7, "login": login}
    u = f"{api}/users/{login}"
    return {
        "login": login,
        "id": user["id"],
        "node_id": f"MDQ6VXNlcj{user['id']}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user['id']}?v=4",
        "gravatar_id": "",
        "url": u,
        "html_url": f"{state.html_base}/{login}",
        "followers_url": f"{u}/followers",
        "following_url": f"{u}/following{{/other_user}}",
        "gists_url": f"{u}/gists{{/gist_id}}",
        "starred_url": f"{u}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{u}/subscriptions",
        "organizations_url": f"{u}/orgs",
        "repos_url": f"{u}/repos",
        "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events",
        "type": "User",
        "site_admin": False,
    }


def private_user(state: GitHubState, login: str, api: str) -> dict[str, Any]:
    user = state.users[login]
    owned = [r for r in state.repos.values() if r.owner == login and not r.deleted]
    return {
        **simple_user(state, login, api),
        "name": user["name"],
        "company": None,
        "blog": "",
        "location": None,
        "email": f"{login}@users.noreply.github.com",
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "public_repos": sum(not r.private for r in owned),
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": "2015-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "private_gists": 0,
        "total_private_repos": sum(r.private for r in owned),
        "owned_private_repos": sum(r.private for r in owned),
        "disk_usage": 1024,
        "collaborators": 0,
        "two_factor_authentication": True,
        "plan": {"name": "pro", "space": 976562499, "private_repos": 9999, "collaborators": 0},
    }


def repo_payload(state: GitHubState, repo: GhRepo, api: str, login: str) -> dict[str, Any]:
    open_issues = sum(i.state == "open" for i in repo.issues.values())
    key = ("repo", repo.id, api, login, repo.pushed_at, repo.updated_at, open_issues)
    return _cached(state, key, lambda: _repo_payload(state, repo, api, login, open_issues))


def _repo_payload(
    state: GitHubState, repo: GhRepo, api: str, login: str, open_issues: int
) -> dict[str, Any]:
    u = f"{api}/repos/{repo.full_name}"
    html = f"{state.html_base}/{repo.full_name}"
    admin = login == repo.owner
    templated = {
        "archive_url": "/{archive_format}{/ref}",
        "assignees_url": "/assignees{/user}",
        "blobs_url": "/git/blobs{/sha}",
        "branches_url": "/branches{/branch}",
        "collaborators_url": "/collaborators{/collaborator}",
        "comments_url": "/comments{/number}",
        "commits_url": "/commits{/sha}",
        "compare_url": "/compare/{base}...{head}",
        "contents_url": "/contents/{+path}",
        "contributors_url": "/contributors",
        "deployments_url": "/deployments",
        "downloads_url": "/downloads",
        "events_url": "/events",
        "forks_url": "/forks",
        "git_commits_url": "/git/commits{/sha}",
        "git_refs_url": "/git/refs{/sha}",
        "git_tags_url": "/git/tags{/sha}",
        "hooks_url": "/hooks",
        "issue_comment_url": "/issues/comments{/number}",
        "issue_events_url": "/issues/events{/number}",
        "issues_url": "/issues{/number}",
        "keys_url": "/keys{/key_id}",
        "labels_url": "/labels{/name}",
        "languages_url": "/languages",
        "merges_url": "/merges",
        "milestones_url": "/milestones{/number}",
        "notifications_url": "/notifications{?since,all,participating}",
        "pulls_url": "/pulls{/number}",
        "releases_url": "/releases{/id}",
        "stargazers_url": "/stargazers",
        "statuses_url": "/statuses/{sha}",
        "subscribers_url": "/subscribers",
        "subscription_url": "/subscription",
        "tags_url": "/tags",
        "teams_url": "/teams",
        "trees_url": "/git/trees{/sha}",
    }
    return {
        "id": repo.id,
        "node_id": f"MDEwOlJlcG9zaXRvcnk{repo.id}",
        "name": repo.name,
        "full_name": repo.full_name,
        "owner": simple_user(state, repo.owner, api),
        "private": repo.private,
        "html_url": html,
        "description": f"The {repo.name} project",
        "fork": False,
        "url": u,
        **{k: u + v for k, v in templated.items()},
        "git_url": f"git:{html[6:]}.git",
        "ssh_url": f"git@github.com:{repo.full_name}.git",
        "clone_url": f"{html}.git",
        "svn_url": html,
        "mirror_url": None,
        "homepage": None,
        "language": "Python",
        "forks_count": 0,
        "forks": 0,
        "stargazers_count": 3,
        "watchers_count": 3,
        "watchers": 3,
        "size": 120,
        "default_branch": repo.default_branch,
        "open_issues_count": open_issues,
        "open_issues": open_issues,
        "is_template": False,
        "topics": [],
        "has_issues": True,
        "has_projects": True,
        "has_wiki": True,
        "has_pages": False,
        "has_downloads": True,
        "has_discussions": False,
        "archived": False,
        "disabled": False,
        "visibility": "private" if repo.private else "public",
        "pushed_at": iso(repo.pushed_at),
        "created_at": iso(repo.created_at),
        "updated_at": iso(repo.updated_at),
        "allow_forking": True,
        "web_commit_signoff_required": False,
        "permissions": {
            "admin": admin,
            "maintain": admin,
            "push": True,
            "triage": True,
            "pull": True,
        },
        "allow_rebase_merge": True,
        "temp_clone_token": "",
        "allow_squash_merge": True,
        "allow_auto_merge": False,
        "delete_branch_on_merge": False,
        "allow_merge_commit": True,
        "subscribers_count": 1,
        "network_count": 0,
        "license": None,
        "template_repository": None,
    }


def commit_payload(state: GitHubState, repo: GhRepo, c: GhCommit, api: str) -> dict[str, Any]:
    u = f"{api}/repos/{repo.full_name}"
    person = {"name": c.author_name, "email": c.author_email, "date": iso(c.date)}
    gh_user = simple_user(state, c.author_login, api) if c.author_login else None
    return {
        "sha": c.sha,
        "node_id": f"C_kwDO{c.sha[:20]}",
        "url": f"{u}/commits/{c.sha}",
        "html_url": f"{state.html_base}/{repo.full_name}/commit/{c.sha}",
        "comments_url": f"{u}/commits/{c.sha}/comments",
        "commit": {
            "url": f"{u}/git/commits/{c.sha}",
            "author": person,
            "committer": dict(person),
            "message": c.message,
            "tree": {"url": f"{u}/git/trees/{c.sha}", "sha": c.sha},
            "comment_count": 0,
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        },
        "author": gh_user,
        "committer": gh_user,
        "parents": [
            {
                "sha": p,
                "url": f"{u}/commits/{p}",
                "html_url": f"{state.html_base}/{repo.full_name}/commit/{p}",
            }
            for p in c.parents
        ],
    }


def file_payload(
    state: GitHubState, repo: GhRepo, c: GhCommit, f: GhFile, api: str
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sha": _sha(f"{c.sha}{f.filename}"),
        "filename": f.filename,
        "status": f.status,
        "additions": f.additions,
        "deletions": f.deletions,
        "changes": f.additions + f.deletions,
        "blob_url": f"{state.html_base}/{repo.full_name}/blob/{c.sha}/{f.filename}",
        "raw_url": f"{state.html_base}/{repo.full_name}/raw/{c.sha}/{f.filename}",
        "contents_url": f"{api}/repos/{repo.full_name}/contents/{f.filename}?ref={c.sha}",
    }
    if f.patch is not None:
        payload["patch"] = f.patch
    return payload


def label_payload(repo: GhRepo, name: str, api: str) -> dict[str, Any]:
    lid = int(_sha(name)[:8], 16)
    return {
        "id": lid,
        "node_id": f"LA_{lid}",
        "url": f"{api}/repos/{repo.full_name}/labels/{name}",
        "name": name,
        "description": None,
        "color": "f29513",
        "default": name == "bug",
    }


def issue_payload(
    state: GitHubState,
    repo: GhRepo,
    i: GhIssue,
    api: str,
    *,
    with_repo: bool = False,
    login: str = "",
) -> dict[str, Any]:
    u = f"{api}/repos/{repo.full_name}"
    html = f"{state.html_base}/{repo.full_name}"
    kind = "pull" if i.is_pull else "issues"
    payload: dict[str, Any] = {
        "id": repo.id * 100000 + i.number,
        "node_id": f"I_kwDO{repo.id}{i.number}",
        "url": f"{u}/issues/{i.number}",
        "repository_url": u,
        "labels_url": f"{u}/issues/{i.number}/labels{{/name}}",
        "comments_url": f"{u}/issues/{i.number}/comments",
        "events_url": f"{u}/issues/{i.number}/events",
        "html_url": f"{html}/{kind}/{i.number}",
        "number": i.number,
        "state": i.state,
        "state_reason": ("completed" if i.state == "closed" else None),
        "title": i.title,
        "body": i.body,
        "user": simple_user(state, i.user, api),
        "labels": [label_payload(repo, n, api) for n in i.labels],
        "assignee": simple_user(state, i.assignees[0], api) if i.assignees else None,
        "assignees": [simple_user(state, a, api) for a in i.assignees],
        "milestone": None,
        "locked": False,
        "active_lock_reason": None,
        "comments": len(i.comments),
        "closed_at": iso(i.closed_at) if i.closed_at else None,
        "created_at": iso(i.created_at),
        "updated_at": iso(i.updated_at),
        "closed_by": None,
        "type": None,
        "author_association": "OWNER",
        "pinned_comment": None,
        "timeline_url": f"{u}/issues/{i.number}/timeline",
        "performed_via_github_app": None,
        "reactions": {
            "url": f"{u}/issues/{i.number}/reactions",
            "total_count": 0,
            "+1": 0,
            "-1": 0,
            "laugh": 0,
            "hooray": 0,
            "confused": 0,
            "heart": 0,
            "rocket": 0,
            "eyes": 0,
        },
    }
    if i.is_pull:
        payload["draft"] = i.draft
        payload["pull_request"] = {
            "url": f"{u}/pulls/{i.number}",
            "html_url": f"{html}/pull/{i.number}",
            "diff_url": f"{html}/pull/{i.number}.diff",
            "patch_url": f"{html}/pull/{i.number}.patch",
            "merged_at": iso(i.merged_at) if i.merged_at else None,
        }
    if with_repo:
        payload["repository"] = repo_payload(state, repo, api, login)
    return payload


def pull_payload(
    state: GitHubState, repo: GhRepo, i: GhIssue, api: str, login: str
) -> dict[str, Any]:
    base = issue_payload(state, repo, i, api)
    u = f"{api}/repos/{repo.full_name}"
    html = f"{state.html_base}/{repo.full_name}/pull/{i.number}"
    head_sha = _sha(f"{repo.full_name}{i.number}{i.head_ref}")
    repo_json = repo_payload(state, repo, api, login)

    def branch(ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": simple_user(state, repo.owner, api),
            "repo": repo_json,
        }

    return {
        "url": f"{u}/pulls/{i.number}",
        "id": base["id"],
        "node_id": f"PR_kwDO{base['id']}",
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": f"{u}/issues/{i.number}",
        "commits_url": f"{u}/pulls/{i.number}/commits",
        "review_comments_url": f"{u}/pulls/{i.number}/comments",
        "review_comment_url": f"{u}/pulls/comments{{/number}}",
        "comments_url": f"{u}/issues/{i.number}/comments",
        "statuses_url": f"{u}/statuses/{head_sha}",
        "number": i.number,
        "state": i.state,
        "locked": False,
        "title": i.title,
        "user": base["user"],
        "body": i.body,
        "labels": base["labels"],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": base["created_at"],
        "updated_at": base["updated_at"],
        "closed_at": base["closed_at"],
        "merged_at": iso(i.merged_at) if i.merged_at else None,
        "merge_commit_sha": head_sha if i.merged_at else None,
        "assignee": base["assignee"],
        "assignees": base["assignees"],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": branch(i.head_ref, head_sha),
        "base": branch(i.base_ref, head_sha[::-1]),
        "_links": {
            k: {"href": v}
            for k, v in {
                "self": f"{u}/pulls/{i.number}",
                "html": html,
                "issue": f"{u}/issues/{i.number}",
                "comments": f"{u}/issues/{i.number}/comments",
                "review_comments": f"{u}/pulls/{i.number}/comments",
                "review_comment": f"{u}/pulls/comments{{/number}}",
                "commits": f"{u}/pulls/{i.number}/commits",
                "statuses": f"{u}/statuses/{head_sha}",
            }.items()
        },
        "author_association": "OWNER",
        "auto_merge": None,
        "draft": i.draft,
        "merged": i.merged_at is not None,
        "mergeable": None if i.merged_at else True,
        "rebaseable": None if i.merged_at else True,
        "mergeable_state": "clean",
        "merged_by": simple_user(state, repo.owner, api) if i.merged_at else None,
        "comments": len(i.comments),
        "review_comments": len(i.review_comments),
        "maintainer_can_modify": False,
        "commits": 1,
        "additions": 10,
        "deletions": 2,
        "changed_files": 1,
    }


#: Keys of a full pull request that its list form ("pull-request-simple") does not carry.
DETAIL_ONLY_PULL_KEYS = (
    "additions",
    "changed_files",
    "comments",
    "commits",
    "deletions",
    "maintainer_can_modify",
    "mergeable",
    "mergeable_state",
    "merged",
    "merged_by",
    "rebaseable",
    "review_comments",
)


def pull_simple_payload(
    state: GitHubState, repo: GhRepo, i: GhIssue, api: str, login: str
) -> dict[str, Any]:
    """A pull request as `GET /repos/{o}/{r}/pulls` lists it: no counts, no `merged`."""
    full = pull_payload(state, repo, i, api, login)
    return {k: v for k, v in full.items() if k not in DETAIL_ONLY_PULL_KEYS}


def comment_payload(
    state: GitHubState, repo: GhRepo, i: GhIssue, c: GhComment, api: str
) -> dict[str, Any]:
    u = f"{api}/repos/{repo.full_name}"
    return {
        "id": c.id,
        "node_id": f"IC_kwDO{c.id}",
        "url": f"{u}/issues/comments/{c.id}",
        "html_url": f"{state.html_base}/{repo.full_name}/issues/{i.number}#issuecomment-{c.id}",
        "body": c.body,
        "user": simple_user(state, c.user, api),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "issue_url": f"{u}/issues/{i.number}",
        "author_association": "CONTRIBUTOR",
        "minimized": None,
        "performed_via_github_app": None,
    }


def review_comment_payload(
    state: GitHubState, repo: GhRepo, i: GhIssue, c: GhComment, api: str
) -> dict[str, Any]:
    u = f"{api}/repos/{repo.full_name}"
    html = f"{state.html_base}/{repo.full_name}/pull/{i.number}#discussion_r{c.id}"
    return {
        "url": f"{u}/pulls/comments/{c.id}",
        "pull_request_review_id": c.id + 1,
        "id": c.id,
        "node_id": f"PRRC_kwDO{c.id}",
        "diff_hunk": "@@ -1,3 +1,3 @@",
        "path": c.path or "README.md",
        "position": c.line,
        "original_position": c.line,
        "commit_id": "0" * 40,
        "original_commit_id": "0" * 40,
        "in_reply_to_id": None,
        "user": simple_user(state, c.user, api),
        "body": c.body,
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "html_url": html,
        "pull_request_url": f"{u}/pulls/{i.number}",
        "author_association": "CONTRIBUTOR",
        "_links": {
            "self": {"href": f"{u}/pulls/comments/{c.id}"},
            "html": {"href": html},
            "pull_request": {"href": f"{u}/pulls/{i.number}"},
        },
        "start_line": None,
        "original_start_line": None,
        "start_side": None,
        "line": c.line,
        "original_line": c.line,
        "side": "RIGHT",
        "subject_type": "line",
    }
