"""`GET /v1/status` at scale: keyset pages, filters and the aggregate, against SQLite and
PostgreSQL, through the public route; and the status page's search and attention rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion.api import create_app
from ingestion.config import Settings
from ingestion.services import Services
from ingestion.status import AggregateCache
from ingestion.storage.accounts import save_account
from ingestion.storage.state import SyncStateStore

ALL = ("calendar", "github", "gmail", "twitter")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pages.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


async def seed(services: Services) -> set[tuple[str, str]]:
    """13 users: Google (gmail + calendar), GitHub and X accounts in a pattern, some synced
    ok, some in error, one waiting on a reconnect, and one sync state without an account."""
    expected: set[tuple[str, str]] = set()
    store = SyncStateStore(services.db)
    async with services.db.session() as session:
        for n in range(12):
            user = f"u{n:02d}"
            if n % 2 == 0:
                await save_account(session, user_id=user, provider_id="google", access_token="g")
                expected |= {(user, "gmail"), (user, "calendar")}
            if n % 3 == 0:
                await save_account(session, user_id=user, provider_id="github", access_token="h")
                expected.add((user, "github"))
            if n % 2 == 1:
                await save_account(session, user_id=user, provider_id="twitter", access_token="x")
                expected.add((user, "twitter"))
    for user, provider, status in (
        ("u00", "gmail", "ok"),
        ("u03", "github", "error"),
        ("u05", "twitter", "reauth_required"),
        ("u06", "github", "ok"),
        ("u09", "github", "error"),
        ("zz-gone", "github", "error"),  # account removed, state left behind
    ):
        run = await store.begin(user, provider, None)
        await store.finish(user, provider, run, status, error="boom" if status != "ok" else None)
        expected.add((user, provider))
    return expected


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, set[Any]]]:
    services = await Services.open(Settings(database_url=database_url), migrate=True)
    expected = await seed(services)
    transport = httpx.ASGITransport(app=create_app(services, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http, expected
    await services.aclose()


async def walk(http: httpx.AsyncClient, query: str) -> tuple[list[tuple[str, str]], int]:
    """Every row of every page of `query`, following nextCursor; and how many pages."""
    rows: list[tuple[str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = f"/v1/status?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await http.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += [(r["userId"], r["provider"]) for r in body["accounts"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return rows, pages
        assert pages < 100


async def test_pages_list_every_pair_once_in_order(
    client: tuple[httpx.AsyncClient, set[Any]],
) -> None:
    http, expected = client
    whole, pages = await walk(http, "limit=1000")
    assert pages == 1
    assert whole == sorted(expected)
    for limit in (1, 4, 5):
        paged, pages = await walk(http, f"limit={limit}")
        assert paged == whole, limit
        assert pages >= len(whole) // limit


async def test_filters_by_status_and_provider_page_through_the_matching_pairs(
    client: tuple[httpx.AsyncClient, set[Any]],
) -> None:
    http, expected = client
    errors, _ = await walk(http, "limit=1&status=error")
    assert errors == [("u03", "github"), ("u09", "github"), ("zz-gone", "github")]
    reconnect, _ = await walk(http, "limit=2&status=reauth_required&provider=twitter")
    assert reconnect == [("u05", "twitter")]
    github, _ = await walk(http, "limit=2&provider=github")
    assert github == sorted(p for p in expected if p[1] == "github")
    idle, _ = await walk(http, "limit=3&status=idle&provider=calendar")
    assert idle == sorted(p for p in expected if p[1] == "calendar")  # none ever ran
    body = (await http.get("/v1/status?status=error&limit=10")).json()
    gone = next(r for r in body["accounts"] if r["userId"] == "zz-gone")
    assert gone["connected"] is False
    assert all(r["connected"] for r in body["accounts"] if r["userId"] != "zz-gone")


async def test_aggregate_counts_every_pair_with_state_and_limit_zero_lists_none(
    client: tuple[httpx.AsyncClient, set[Any]],
) -> None:
    http, _ = client
    body = (await http.get("/v1/status?limit=0")).json()
    assert body["accounts"] == []
    assert body["nextCursor"] is None
    aggregate = body["aggregate"]
    assert aggregate["counts"] == {
        "github": {"error": 3, "ok": 1},
        "gmail": {"ok": 1},
        "twitter": {"reauth_required": 1},
    }
    assert aggregate["pairs"] == 6
    assert set(aggregate["oldestSyncAt"]) == {"github", "gmail"}


@pytest.mark.parametrize(
    "query",
    [
        "cursor=not-a-cursor",
        "cursor=WyJhIl0",
        "limit=-1",
        "limit=1001",
        "limit=x",
        "provider=myspace",
        "status=sleeping",
    ],
)
async def test_bad_parameters_are_refused_with_422(
    client: tuple[httpx.AsyncClient, set[Any]], query: str
) -> None:
    http, _ = client
    response = await http.get(f"/v1/status?{query}")
    assert response.status_code == 422
    assert response.json()["error"]


async def test_status_page_shows_attention_first_and_searches_one_user(
    client: tuple[httpx.AsyncClient, set[Any]],
) -> None:
    http, _ = client
    page = (await http.get("/")).text
    assert page.index('data-user="u03"') < page.index('data-user="u00"')
    assert page.index('data-user="u05"') < page.index('data-user="u00"')
    assert '<table id="aggregate"' in page
    found = (await http.get("/?user=u06")).text
    assert 'data-user="u06"' in found
    assert 'data-user="u00"' not in found
    assert 'data-user="u03"' not in found
    assert "3 syncs of user u06" in found


async def test_the_aggregate_is_reused_only_for_a_bounded_while(tmp_path: Path) -> None:
    services = await Services.open(
        Settings(database_url=f"sqlite:///{tmp_path / 'cache.db'}"), migrate=True
    )
    try:
        store = SyncStateStore(services.db)
        reused = AggregateCache(max_age=60, reuse_factor=1e9)
        fresh = AggregateCache(max_age=0)
        first = await reused.get(services.db)
        run = await store.begin("u1", "github", None)
        await store.finish("u1", "github", run, "ok")
        assert await reused.get(services.db) is first  # within its while: the same figures
        assert (await fresh.get(services.db)).counts == {"github": {"ok": 1}}
        assert first.counts == {}
    finally:
        await services.aclose()
