"""The status page for people (`GET /`): server-rendered HTML, a little CSS and script, no build.

`render_status_page(document, …)` turns an `ingestion status --json` document into one page:
the aggregate (pairs by provider and status, oldest cursor age), the pairs needing attention
first, then the document's page of users and providers (status, last successful sync, items,
last error, re-auth needed) with a link to the next page, a search by user id, queue figures and
recent runs, with "sync now" and "retry dead letters" buttons that call the `/v1` API. It never
lists the whole table. Every value is HTML-escaped by Jinja2's autoescaping; no token is ever in
the document.

With an API key, `GET /` without it answers `render_login_page()`: a sign-in form and no data.
The script (`static/status.js`, no inline script: the API's Content-Security-Policy forbids it)
keeps the key in the tab's sessionStorage and loads the page with `Authorization: Bearer`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = [
    "ATTENTION_LIMIT",
    "REFRESH_SECONDS",
    "ROW_LIMIT",
    "STATIC_DIR",
    "render_login_page",
    "render_status_page",
]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"
#: The page reloads itself this often (paused while a person types the key or an action runs).
REFRESH_SECONDS = 15
#: Rows of one page of the table, and at most `ATTENTION_LIMIT` pairs of each status needing
#: attention above them: a table people can read, a page phones load.
ROW_LIMIT = 200
ATTENTION_LIMIT = 50

_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _ago(value: str | None, now: datetime) -> str:
    """`3 min ago` for an ISO time; `never` for none."""
    when = _parse(value)
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _duration(started: str | None, finished: str | None) -> str:
    start, end = _parse(started), _parse(finished)
    if start is None or end is None:
        return "…"
    return f"{(end - start).total_seconds():.1f} s"


def _needs_attention(row: dict[str, Any]) -> bool:
    return bool(
        row["reauthRequired"] or row["lastError"] or row["status"] in ("error", "quota_exhausted")
    )


def render_status_page(
    document: dict[str, Any],
    *,
    key_required: bool,
    queue_available: bool,
    now: datetime,
    attention: list[dict[str, Any]] | None = None,
    search: str = "",
) -> str:
    """The page for one status document (see `ingestion.status.gather_status`).

    `attention` (pairs in error or waiting on a reconnect, read apart) come first, then the
    document's page of rows (those needing attention among them first too); `search` is the
    user id the rows were searched for, if any.
    """
    accounts = document["accounts"]
    first = list(attention or [])
    seen = {(r["userId"], r["provider"]) for r in first}
    rest = [r for r in accounts if (r["userId"], r["provider"]) not in seen]
    shown = first + [r for r in rest if _needs_attention(r)]
    shown += [r for r in rest if not _needs_attention(r)]
    aggregate = document.get("aggregate") or {}
    totals: dict[str, int] = {}
    for by_status in (aggregate.get("counts") or {}).values():
        for status, count in by_status.items():
            totals[status] = totals.get(status, 0) + count
    template = _env.get_template("status.html")
    return template.render(
        accounts=shown,
        total_rows=aggregate.get("pairs", len(accounts)),
        aggregate=aggregate,
        next_cursor=document.get("nextCursor"),
        search=search,
        attention_limit=ATTENTION_LIMIT,
        status_counts=sorted(totals.items()),
        queue=document["queue"],
        runs=document["recentRuns"],
        key_required=key_required,
        queue_available=queue_available,
        refresh_seconds=REFRESH_SECONDS,
        generated=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        ago=lambda value: _ago(value, now),
        duration=_duration,
    )


def render_login_page() -> str:
    """The page a browser gets without the API key: the sign-in form, nothing else."""
    return _env.get_template("login.html").render(refresh_seconds=REFRESH_SECONDS)
