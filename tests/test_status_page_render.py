"""The status page's rendering: the row limit with rows needing attention first, escaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ingestion.web import ROW_LIMIT, render_status_page

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def row(user: str, provider: str, **changes: Any) -> dict[str, Any]:
    base = {
        "userId": user,
        "provider": provider,
        "accountProvider": "google",
        "connected": True,
        "status": "ok",
        "lastSyncTime": (NOW - timedelta(minutes=3)).isoformat().replace("+00:00", "Z"),
        "itemsFetched": 10,
        "itemsUpserted": 10,
        "itemsDeleted": 0,
        "lastError": None,
        "reauthRequired": False,
        "updatedAt": None,
    }
    base.update(changes)
    return base


def document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"accounts": rows, "queue": {"kind": "none"}, "recentRuns": []}


def render(rows: list[dict[str, Any]], **kwargs: Any) -> str:
    return render_status_page(
        document(rows), key_required=False, queue_available=True, now=NOW, **kwargs
    )


def test_small_tables_are_shown_whole_needing_attention_first() -> None:
    page = render(
        [row("a", "gmail"), row("b", "gmail", status="error", lastError="HTTP 500"), row("c", "x")]
    )
    assert page.index('data-user="b"') < page.index('data-user="a"') < page.index('data-user="c"')
    assert "Showing 3 syncs" in page
    assert 'id="next-page"' not in page
    assert "3 min ago" in page


def test_rows_needing_attention_come_first_then_one_page_and_a_next_link() -> None:
    rows = [row(f"user-{n:04d}", "github") for n in range(ROW_LIMIT)]
    attention = [
        row("zed", "twitter", status="reauth_required", reauthRequired=True),
        row("yan", "gmail", status="error", lastError="HTTP 503"),
    ]
    doc = {
        **document(rows),
        "nextCursor": "abc/+=",
        "aggregate": {
            "pairs": 100_000,
            "counts": {"github": {"ok": 99_000, "error": 1_000}},
            "oldestSyncAt": {"github": "2026-05-01T11:44:30Z"},
        },
    }
    page = render_status_page(
        doc, key_required=False, queue_available=True, now=NOW, attention=attention
    )
    assert page.count("<tr data-user=") == ROW_LIMIT + 2  # the page, and attention above it
    assert page.index('data-user="zed"') < page.index('data-user="user-0000"')
    assert page.index('data-user="yan"') < page.index('data-user="user-0000"')
    assert f"Showing {ROW_LIMIT + 2} syncs" in page
    assert "100000 syncs ran" in page
    assert 'href="/?cursor=abc/%2B%3D"' in page  # the opaque cursor, escaped
    assert "?all=1" not in page  # never the whole table
    assert '<tr data-provider="github">' in page
    assert ">15 min ago<" in page


def test_values_are_escaped() -> None:
    page = render([row('<b>"x"</b>', "gmail", lastError="<img src=x onerror=alert(1)>")])
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>" not in page
