"""The push routes through the HTTP API, with the real Redis queue and the emulated senders.

Every refused delivery (unsigned, forged, expired, wrong audience, wrong service account,
replayed, unknown channel, wrong token, too large) enqueues nothing; a valid one enqueues
exactly one coalesced job; the API key is not asked of them; every outcome is counted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import delete

from ingestion.api import create_app
from ingestion.config import Settings
from ingestion.providers.github.sync import GitHubState, RepoInfo
from ingestion.push import is_self_authenticated
from ingestion.push.store import ChannelStore, token_digest
from ingestion.queue import Keys, RedisJobQueue
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.models import Account, SyncStateRow
from tests.emulators.push import PubSub, SigningKey, github_delivery
from tests.emulators.server import RunningServer, serve

TOPIC = "projects/emulated/topics/gmail"
AUDIENCE = "https://ingest.example.com/v1/push/gmail"
ACCOUNT = "gmail-push@emulated.iam.gserviceaccount.com"
SECRET = "webhook-secret-0123456789"
API_KEY = "k" * 40
CHANNEL_TOKEN = "calendar-channel-secret"


@pytest.fixture
def pubsub() -> Iterator[tuple[PubSub, RunningServer]]:
    state = PubSub()
    server = serve(state.create_app())
    yield state, server
    server.stop()
    state.sender.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'push.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def settings(
    database_url: str, redis_url: str, namespace: str, pubsub: tuple[PubSub, RunningServer]
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        redis_url=redis_url,
        redis_namespace=namespace,
        ingestion_api_key=API_KEY,
        gmail_pubsub_topic=TOPIC,
        gmail_push_audience=AUDIENCE,
        gmail_push_service_account=ACCOUNT,
        google_oidc_certs_url=f"{pubsub[1].url}/oauth2/v1/certs",
        public_base_url="https://ingest.example.com",
        github_webhook_secret=SECRET,
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    opened = await Services.open(settings, migrate=True)
    now = datetime.now(UTC)
    async with opened.db.session() as session:
        for user in ("u1", "u2"):
            await save_account(session, user_id=user, provider_id="google", access_token="t")
            await save_account(session, user_id=user, provider_id="github", access_token="g")
        session.add(SyncStateRow(user_id="u1", provider="gmail", cursor={"historyId": "500"}))
        for user, repo in (("u1", "octo/Hello"), ("u2", "octo/other")):
            cursor = GitHubState(repos={repo: RepoInfo(repo)}).dump()
            session.add(SyncStateRow(user_id=user, provider="github", cursor=cursor))
    store = ChannelStore(opened.db)
    await store.save(
        channel_id="gmail:u1",
        provider="gmail",
        user_id="u1",
        resource="u1@example.com",
        renewed_at=now,
        expiration=now + timedelta(days=7),
    )
    await store.save(
        channel_id="chan-1",
        provider="calendar",
        user_id="u2",
        resource="work@example.com",
        resource_id="r1",
        token_sha256=token_digest(CHANNEL_TOKEN),
        renewed_at=now,
        expiration=now + timedelta(days=7),
    )
    yield opened
    await opened.aclose()


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    queue = RedisJobQueue(settings)
    transport = httpx.ASGITransport(app=create_app(services, queue))
    async with httpx.AsyncClient(
        transport=transport, base_url="https://ingest.example.com"
    ) as http:
        yield http
    await queue.aclose()


@pytest.fixture
async def stream(redis_url: str, namespace: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)

    async def jobs(*, drain: bool = False) -> list[tuple[str, str]]:
        """The jobs on the stream; `drain` then empties the queue, as if a worker ran them
        (so a later request cannot hide behind coalescing)."""
        entries = await client.xrange(Keys(namespace).stream)
        if drain:
            for key in [k async for k in client.scan_iter(match=f"{namespace}:*")]:
                if ":push:seen:" not in key:  # the queue's keys, not the delivery ids seen
                    await client.delete(key)
        return [(f["type"], json.loads(f["payload"])["userId"]) for _, f in entries]

    yield jobs
    await client.aclose()


def gmail_body(pubsub: PubSub, address: str, history_id: int | str) -> bytes:
    _, body = pubsub.envelope({"emailAddress": address, "historyId": history_id})
    return body


def bearer(pubsub: PubSub, **overrides: Any) -> dict[str, str]:
    claims = {**pubsub.claims(AUDIENCE, ACCOUNT), **overrides}
    return {"Authorization": f"Bearer {pubsub.key.sign(claims)}"}


async def test_a_valid_gmail_delivery_enqueues_one_coalesced_sync_without_the_api_key(
    client: httpx.AsyncClient, stream: Any, pubsub: tuple[PubSub, RunningServer]
) -> None:
    ps = pubsub[0]
    first = await client.post(
        "/v1/push/gmail", content=gmail_body(ps, "U1@example.com", 501), headers=bearer(ps)
    )
    assert first.status_code == 204
    assert await stream() == [("gmail:fetch", "u1")]
    again = await client.post(
        "/v1/push/gmail", content=gmail_body(ps, "u1@example.com", 502), headers=bearer(ps)
    )
    assert again.status_code == 204
    assert await stream() == [("gmail:fetch", "u1")]  # coalesced with the queued job
    metrics = (await client.get("/metrics")).text
    assert 'ingestion_push_total{outcome="enqueued",provider="gmail"}' in metrics
    assert 'ingestion_push_total{outcome="coalesced",provider="gmail"}' in metrics
    assert is_self_authenticated("/v1/push/gmail")
    assert not is_self_authenticated("/v1/sync")


@pytest.mark.parametrize(
    ("case", "status", "outcome"),
    [
        ("unsigned", 401, "unauthenticated"),
        ("forged", 401, "forged"),
        ("expired", 401, "expired"),
        ("wrong_audience", 401, "wrong_audience"),
        ("other_account", 403, "forbidden"),
        ("unverified_email", 403, "forbidden"),
        ("other_issuer", 401, "forged"),
        ("api_key_instead", 401, "unauthenticated"),
    ],
)
async def test_refused_gmail_deliveries_enqueue_nothing(
    client: httpx.AsyncClient,
    stream: Any,
    pubsub: tuple[PubSub, RunningServer],
    case: str,
    status: int,
    outcome: str,
) -> None:
    ps = pubsub[0]
    now = int(datetime.now(UTC).timestamp())
    headers: dict[str, str] = {
        "unsigned": {},
        # Same key id, another key: the signature does not verify.
        "forged": {
            "Authorization": "Bearer "
            + SigningKey(kid=ps.key.kid).sign(ps.claims(AUDIENCE, ACCOUNT))
        },
        "expired": bearer(ps, iat=now - 7200, exp=now - 3600),
        "wrong_audience": bearer(ps, aud="https://elsewhere.example.com/push"),
        "other_account": bearer(ps, email="someone@evil.example.com"),
        "unverified_email": bearer(ps, email_verified=False),
        "other_issuer": bearer(ps, iss="https://evil.example.com"),
        "api_key_instead": {"Authorization": f"Bearer {API_KEY}"},
    }[case]
    answer = await client.post(
        "/v1/push/gmail", content=gmail_body(ps, "u1@example.com", 900), headers=headers
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["outcome"] == outcome
    assert await stream() == []
    assert (
        f'ingestion_push_total{{outcome="{outcome}",provider="gmail"}}'
        in (await client.get("/metrics")).text
    )


async def test_replayed_unknown_stale_and_malformed_gmail_deliveries_enqueue_nothing(
    client: httpx.AsyncClient, stream: Any, pubsub: tuple[PubSub, RunningServer]
) -> None:
    ps = pubsub[0]
    unknown = await client.post(
        "/v1/push/gmail", content=gmail_body(ps, "nobody@example.com", 900), headers=bearer(ps)
    )
    stale = await client.post(
        "/v1/push/gmail", content=gmail_body(ps, "u1@example.com", 500), headers=bearer(ps)
    )
    assert (unknown.status_code, stale.status_code) == (204, 204)  # acknowledged, dropped
    bad = json.dumps({"message": {"data": base64.b64encode(b"{").decode(), "messageId": "1"}})
    malformed = await client.post("/v1/push/gmail", content=bad, headers=bearer(ps))
    assert malformed.status_code == 400
    assert await stream() == []
    body = gmail_body(ps, "u1@example.com", 901)
    assert (
        await client.post("/v1/push/gmail", content=body, headers=bearer(ps))
    ).status_code == 204
    assert await stream(drain=True) == [("gmail:fetch", "u1")]
    replay = await client.post("/v1/push/gmail", content=body, headers=bearer(ps))
    assert replay.status_code == 204  # acknowledged (a Pub/Sub redelivery), nothing enqueued
    assert await stream() == []
    metrics = (await client.get("/metrics")).text
    for outcome in ("unknown", "stale", "malformed", "replayed"):
        assert f'ingestion_push_total{{outcome="{outcome}",provider="gmail"}}' in metrics


async def test_bodies_over_64_kb_are_refused_with_413(
    client: httpx.AsyncClient, stream: Any, pubsub: tuple[PubSub, RunningServer]
) -> None:
    big = b"x" * (64 * 1024 + 1)
    for route in ("gmail", "calendar", "github"):
        answer = await client.post(f"/v1/push/{route}", content=big, headers=bearer(pubsub[0]))
        assert answer.status_code == 413, route

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(70):
            yield b"y" * 1024

    streamed = await client.post("/v1/push/github", content=chunks())
    assert streamed.status_code == 413
    assert await stream() == []


async def test_calendar_notifications_need_a_known_channel_and_its_token(
    client: httpx.AsyncClient, stream: Any
) -> None:
    def headers(channel: str, token: str, state: str) -> dict[str, str]:
        return {
            "X-Goog-Channel-ID": channel,
            "X-Goog-Channel-Token": token,
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-ID": "r1",
            "X-Goog-Message-Number": "2",
        }

    unknown = await client.post(
        "/v1/push/calendar", headers=headers("nope", CHANNEL_TOKEN, "exists")
    )
    wrong = await client.post("/v1/push/calendar", headers=headers("chan-1", "guess", "exists"))
    missing = await client.post("/v1/push/calendar", headers={"X-Goog-Channel-ID": "chan-1"})
    assert (unknown.status_code, wrong.status_code, missing.status_code) == (401, 401, 401)
    sync = await client.post("/v1/push/calendar", headers=headers("chan-1", CHANNEL_TOKEN, "sync"))
    assert sync.status_code == 200
    assert await stream() == []
    exists = await client.post(
        "/v1/push/calendar", headers=headers("chan-1", CHANNEL_TOKEN, "exists")
    )
    assert exists.status_code == 200
    assert exists.json()["outcome"] == "enqueued"
    again = await client.post(
        "/v1/push/calendar", headers=headers("chan-1", CHANNEL_TOKEN, "exists")
    )
    assert again.json()["outcome"] == "coalesced"
    assert await stream() == [("calendar:fetch", "u2")]


async def test_a_notification_for_a_running_sync_asks_for_one_more_run(
    client: httpx.AsyncClient, stream: Any, redis_url: str, namespace: str
) -> None:
    """The running job may have read before the change: the notification is not swallowed."""
    headers = {
        "X-Goog-Channel-ID": "chan-1",
        "X-Goog-Channel-Token": CHANNEL_TOKEN,
        "X-Goog-Resource-State": "exists",
    }
    first = await client.post("/v1/push/calendar", headers=headers)
    assert first.json()["outcome"] == "enqueued"
    keys = Keys(namespace)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    job_id = await redis.get(keys.active("calendar", "u2"))
    await redis.hset(keys.running("calendar", "u2"), "job", job_id)  # a worker began it
    second = await client.post("/v1/push/calendar", headers=headers)
    assert second.json()["outcome"] == "follow_up"
    assert await redis.hkeys(keys.widen("calendar", "u2")) == ["rerun"]
    await redis.aclose()


async def test_github_webhooks_are_verified_deduplicated_and_reach_the_users_of_the_repo(
    client: httpx.AsyncClient, stream: Any
) -> None:
    payload = {"ref": "refs/heads/main", "repository": {"full_name": "octo/hello"}}
    headers, body = github_delivery("push", payload, SECRET)
    unsigned = {k: v for k, v in headers.items() if not k.startswith("X-Hub")}
    assert (await client.post("/v1/push/github", content=body, headers=unsigned)).status_code == 401
    forged_headers, _ = github_delivery("push", payload, "another-secret-0123456789")
    forged = await client.post("/v1/push/github", content=body, headers=forged_headers)
    assert forged.status_code == 401
    tampered = body.replace(b"octo/hello", b"octo/other")
    assert (
        await client.post("/v1/push/github", content=tampered, headers=headers)
    ).status_code == 401
    assert await stream() == []

    ping_headers, ping_body = github_delivery(
        "ping", {"zen": "Keep it simple.", "hook_id": 1}, SECRET
    )
    ping = await client.post("/v1/push/github", content=ping_body, headers=ping_headers)
    assert (ping.status_code, ping.json()["outcome"]) == (200, "ping")
    star_headers, star_body = github_delivery("star", payload, SECRET)
    star = await client.post("/v1/push/github", content=star_body, headers=star_headers)
    assert star.json()["outcome"] == "ignored"
    assert await stream() == []

    valid = await client.post("/v1/push/github", content=body, headers=headers)
    assert (valid.status_code, valid.json()["outcome"]) == (200, "enqueued")
    assert await stream(drain=True) == [("github:fetch", "u1")]  # u2 does not mirror it
    replay = await client.post("/v1/push/github", content=body, headers=headers)
    assert (replay.status_code, replay.json()["outcome"]) == (200, "replayed")
    assert await stream() == []

    for event in (
        "issues",
        "issue_comment",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
    ):
        other = {"action": "opened", "repository": {"full_name": "octo/other"}}
        h, b = github_delivery(event, other, SECRET)
        assert (await client.post("/v1/push/github", content=b, headers=h)).status_code == 200
    assert await stream() == [("github:fetch", "u2")]
    nobody_h, nobody_b = github_delivery("push", {"repository": {"full_name": "x/y"}}, SECRET)
    nobody = await client.post("/v1/push/github", content=nobody_b, headers=nobody_h)
    assert nobody.json()["outcome"] == "unknown"


async def test_a_notification_for_a_user_without_the_account_enqueues_nothing(
    client: httpx.AsyncClient, stream: Any, services: Services
) -> None:
    """Channels left behind by an account removed elsewhere: acknowledged, counted, dropped
    (a job would only fail for want of tokens)."""
    async with services.db.session() as session:
        await session.execute(delete(Account).where(Account.user_id == "u2"))
    headers = {
        "X-Goog-Channel-ID": "chan-1",
        "X-Goog-Channel-Token": CHANNEL_TOKEN,
        "X-Goog-Resource-State": "exists",
    }
    answer = await client.post("/v1/push/calendar", headers=headers)
    assert (answer.status_code, answer.json()["outcome"]) == (200, "unknown")
    payload = {"action": "opened", "repository": {"full_name": "octo/other"}}
    h, b = github_delivery("issues", payload, SECRET)
    assert (await client.post("/v1/push/github", content=b, headers=h)).json()[
        "outcome"
    ] == "unknown"
    assert await stream() == []
