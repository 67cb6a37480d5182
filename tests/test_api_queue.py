"""The HTTP API with the real Redis queue: enqueue, coalescing, readiness, dead letters, figures."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from ingestion.api import create_app
from ingestion.config import Settings
from ingestion.queue import Keys, RedisJobQueue
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.state import SyncStateStore


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'api.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def settings(database_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, redis_namespace=namespace)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    opened = await Services.open(settings, migrate=True)
    async with opened.db.session() as session:
        await save_account(session, user_id="u1", provider_id="google", access_token="t-google")
    store = SyncStateStore(opened.db)
    run = await store.begin("u1", "gmail", None)
    await store.finish("u1", "gmail", run, "ok")
    yield opened
    await opened.aclose()


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    queue = RedisJobQueue(settings)
    transport = httpx.ASGITransport(app=create_app(services, queue))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as http:
        yield http
    await queue.aclose()


async def test_sync_puts_one_job_on_the_stream_and_coalesces_the_second(
    client: httpx.AsyncClient, stream: aioredis.Redis, namespace: str
) -> None:
    first = await client.post(
        "/v1/sync", json={"provider": "gmail", "userId": "u1", "options": {"maxResults": 5}}
    )
    assert first.status_code == 202
    body = first.json()
    assert body["coalesced"] is False
    assert body["jobId"]
    entries = await stream.xrange(Keys(namespace).stream)
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields["type"] == "gmail:fetch"
    assert json.loads(fields["payload"]) == {"userId": "u1", "options": {"maxResults": 5}}
    assert fields["jobId"] == body["jobId"]

    second = await client.post("/v1/sync", json={"provider": "gmail", "userId": "u1"})
    assert second.status_code == 202
    assert second.json() == {"jobId": body["jobId"], "coalesced": True}
    assert await stream.xlen(Keys(namespace).stream) == 1

    calendar = await client.post("/v1/sync", json={"provider": "calendar", "userId": "u1"})
    assert calendar.status_code == 202
    assert calendar.json()["coalesced"] is False
    assert await stream.xlen(Keys(namespace).stream) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_status_and_metrics_show_the_queue_figures(
    client: httpx.AsyncClient, stream: aioredis.Redis, namespace: str
) -> None:
    assert (await client.post("/v1/sync", json={"provider": "gmail", "userId": "u1"})).is_success
    await stream.xadd(
        Keys(namespace).dead,
        {
            "type": "calendar:fetch",
            "payload": '{"userId": "u1"}',
            "error": "boom",
            "failedAt": "2026-01-01T00:00:00Z",
        },
    )
    status = (await client.get("/v1/status")).json()
    assert status["queue"]["kind"] == "redis"
    assert status["queue"]["length"] == 1
    assert status["queue"]["deadLetters"] == 1

    scrape = await client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert 'ingestion_queue{figure="length"} 1.0' in text
    assert 'ingestion_queue{figure="dead_letters"} 1.0' in text
    assert 'ingestion_cursor_age_seconds{provider="gmail",stat="max"}' in text

    page = (await client.get("/")).text
    assert "retry dead letters" in page


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_dlq_retry_puts_dead_letters_back_on_the_queue(
    client: httpx.AsyncClient, stream: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    for user in ("u1", "u2"):
        await stream.xadd(
            keys.dead,
            {
                "type": "github:fetch",
                "payload": json.dumps({"userId": user}),
                "error": "HTTP 500",
                "failedAt": "2026-01-01T00:00:00Z",
            },
        )
    first_dead = (await stream.xrange(keys.dead))[0][0]
    bad = await client.post("/v1/dlq/retry", json={"ids": "all"})
    assert bad.status_code == 422
    one = await client.post("/v1/dlq/retry", json={"ids": [first_dead]})
    assert one.json() == {"retried": 1}
    rest = await client.post("/v1/dlq/retry", json={})
    assert rest.json() == {"retried": 1}
    assert await stream.xlen(keys.dead) == 0
    users = sorted(json.loads(f["payload"])["userId"] for _, f in await stream.xrange(keys.stream))
    assert users == ["u1", "u2"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readyz_is_503_naming_the_queue_when_redis_is_unreachable(
    services: Services, database_url: str
) -> None:
    # A port this test holds bound but never listens on: connections to it are refused, and no
    # other test can take it meanwhile.
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    closed_port = holder.getsockname()[1]
    closed = Settings(database_url=database_url, redis_url=f"redis://127.0.0.1:{closed_port}/0")
    queue = RedisJobQueue(closed)
    transport = httpx.ASGITransport(app=create_app(services, queue))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "unavailable"
            assert body["database"] == "ok"
            assert body["queue"].startswith("error: ")
            # The rest of the API still answers and says what is wrong.
            status = (await http.get("/v1/status")).json()
            assert status["queue"]["error"].startswith("queue unreachable")
            assert (await http.get("/metrics")).status_code == 200
            assert (await http.get("/")).status_code == 200
            sync = await http.post("/v1/sync", json={"provider": "gmail", "userId": "u1"})
            assert sync.status_code == 503
            assert "the queue did not accept the job" in sync.json()["error"]
    finally:
        await queue.aclose()
        holder.close()
