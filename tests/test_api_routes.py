"""The HTTP API against real SQLite and PostgreSQL, in-process through ASGI.

Routes that need a queue are covered in `test_api_queue.py` (real Redis).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion.api import create_app
from ingestion.config import Settings
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.state import SyncStateStore
from tests.conftest import run_cli

SECRET_TOKEN = "ya29.secret-access-token-never-shown"
API_KEY = "s3cret-key-of-32-characters-or-more"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'api.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


async def open_services(database_url: str, **settings: Any) -> Services:
    return await Services.open(
        Settings(database_url=database_url, redis_url=None, **settings), migrate=True
    )


async def seed(services: Services) -> None:
    """u1 has a Google account synced once (gmail ok) and a GitHub account never synced."""
    async with services.db.session() as session:
        await save_account(
            session,
            user_id="u1",
            provider_id="google",
            access_token=SECRET_TOKEN,
            refresh_token="1//refresh-secret",
        )
        await save_account(session, user_id="u1", provider_id="github", access_token="ghp_x")
    store = SyncStateStore(services.db)
    run = await store.begin("u1", "gmail", "job-1")
    await store.checkpoint(
        "u1", "gmail", run, {"historyId": "42"}, fetched=3, upserted=3, deleted=0
    )
    await store.finish("u1", "gmail", run, "ok")


@pytest.fixture
async def services(database_url: str) -> AsyncIterator[Services]:
    opened = await open_services(database_url)
    await seed(opened)
    yield opened
    await opened.aclose()


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080"
    )


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(services, None)) as http:
        yield http


async def test_healthz_and_readyz_without_queue(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "database": "ok",
        "queue": "none in this process",
    }


BAD_SYNC_BODIES: list[tuple[Any, str]] = [
    ({"provider": "myspace", "userId": "u1"}, "provider must be one of gmail, calendar"),
    ({"provider": "gmail"}, "userId must be a non-empty string"),
    ({"provider": "gmail", "userId": "  "}, "userId must be a non-empty string"),
    (
        {"provider": "gmail", "userId": "u1", "options": {"maxResults": 0}},
        "options.maxResults must be a positive integer",
    ),
    ({"provider": "gmail", "userId": "u1", "options": {"colour": "red"}}, "unknown option(s)"),
    (
        {"provider": "gmail", "userId": "u1", "options": {"since": "last tuesday"}},
        "options.since is not ISO-8601",
    ),
    (["gmail", "u1"], "the body must be a JSON object"),
]


async def test_sync_refuses_bad_input_with_422(client: httpx.AsyncClient) -> None:
    for body, message in BAD_SYNC_BODIES:
        response = await client.post("/v1/sync", json=body)
        assert response.status_code == 422, body
        assert message in response.json()["error"], body


async def test_sync_refuses_text_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/sync", content=b"provider=gmail", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {"error": "the body must be a JSON object"}


async def test_sync_for_a_user_without_that_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sync", json={"provider": "twitter", "userId": "u1"})
    assert response.status_code == 404
    assert response.json() == {"error": "user 'u1' has no connected twitter account"}
    unknown = await client.post("/v1/sync", json={"provider": "gmail", "userId": "nobody"})
    assert unknown.status_code == 404


async def test_sync_without_a_queue_in_this_process_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/sync", json={"provider": "calendar", "userId": "u1", "options": {"maxResults": 5}}
    )
    assert response.status_code == 503
    assert "no job queue runs in this process" in response.json()["error"]
    retry = await client.post("/v1/dlq/retry", json={})
    assert retry.status_code == 503


async def test_accounts_route_shows_sync_state_per_provider_and_no_token(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/accounts/u1")
    assert response.status_code == 200
    document = response.json()
    by_provider = {row["provider"]: row for row in document["providers"]}
    assert sorted(by_provider) == ["calendar", "github", "gmail"]
    assert by_provider["gmail"]["status"] == "ok"
    assert by_provider["gmail"]["itemsUpserted"] == 3
    assert by_provider["gmail"]["lastSyncTime"] is not None
    assert by_provider["github"]["status"] == "idle"
    assert SECRET_TOKEN not in response.text
    assert "refresh-secret" not in response.text
    missing = await client.get("/v1/accounts/nobody")
    assert missing.status_code == 404
    # The same rows as the status document has for that user.
    status = (await client.get("/v1/status")).json()
    assert document["providers"] == [r for r in status["accounts"] if r["userId"] == "u1"]


async def test_status_page_renders_users_providers_and_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert 'data-user="u1" data-provider="gmail"' in page
    assert "sync now" in page
    assert SECRET_TOKEN not in page
    css = await client.get("/static/status.css")
    assert css.status_code == 200
    assert "@media" in css.text
    script = await client.get("/static/status.js")
    assert script.status_code == 200
    assert "sessionStorage" in script.text


async def test_status_page_escapes_what_it_shows(services: Services) -> None:
    store = SyncStateStore(services.db)
    run = await store.begin("u1", "calendar", None)
    await store.finish("u1", "calendar", run, "error", error="<script>alert(1)</script>")
    async with client_for(create_app(services, None)) as http:
        page = (await http.get("/")).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_v1_routes_need_the_key_when_one_is_set(database_url: str) -> None:
    services = await open_services(database_url, ingestion_api_key=API_KEY)
    try:
        await seed(services)
        async with client_for(create_app(services, None)) as http:
            for method, path in (
                ("GET", "/v1/status"),
                ("GET", "/v1/accounts/u1"),
                ("POST", "/v1/sync"),
                ("POST", "/v1/dlq/retry"),
            ):
                anonymous = await http.request(method, path, json={})
                assert anonymous.status_code == 401, path
                assert anonymous.headers["www-authenticate"] == "Bearer"
                wrong = await http.request(
                    method, path, headers={"Authorization": f"Bearer {API_KEY[:-1]}z"}
                )
                assert wrong.status_code == 401, path
                basic = await http.request(
                    method, path, headers={"Authorization": f"Basic {API_KEY}"}
                )
                assert basic.status_code == 401, path
            good = {"Authorization": f"Bearer {API_KEY}"}
            assert (await http.get("/v1/status", headers=good)).status_code == 200
            assert (await http.get("/v1/accounts/u1", headers=good)).status_code == 200
            assert (await http.post("/v1/sync", headers=good, json={})).status_code == 422
            # Probes and the scrape stay open; the page asks for the key and shows no data.
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200
            page = await http.get("/")
            assert page.status_code == 401
            assert 'data-locked="true"' in page.text
            assert 'id="api-key"' in page.text
            assert "u1" not in page.text
            assert API_KEY not in page.text
            shown = await http.get("/", headers=good)
            assert shown.status_code == 200
            assert 'data-user="u1"' in shown.text
    finally:
        await services.aclose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_v1_status_is_the_status_command_json(
    services: Services, client: httpx.AsyncClient, database_url: str, base_env: dict[str, str]
) -> None:
    response = await client.get("/v1/status")
    assert response.status_code == 200
    env = {**base_env, "DATABASE_URL": database_url}
    cli = run_cli("status", "--json", env=env, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)
    assert SECRET_TOKEN not in response.text
