"""The X provider through the command line, as an operator runs it.

`ingestion sync twitter --user … --json` in real processes, against the X emulator, the OAuth
emulator (token refresh with rotation) and the memory engine emulator.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingestion.config import Settings
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from tests.conftest import run_cli
from tests.emulators.memory_engine import MemoryEngineState
from tests.emulators.memory_engine import create_app as memory_engine_app
from tests.emulators.oauth import OAuthState
from tests.emulators.oauth import create_app as oauth_app
from tests.emulators.server import RunningServer, serve
from tests.emulators.twitter import TwitterState, create_app, days_ago

ME, BOB = "100", "200"


@pytest.fixture
def x_state() -> TwitterState:
    state = TwitterState()
    state.add_user(ME, "alice")
    state.add_user(BOB, "bob")
    return state


@pytest.fixture
def engine_state() -> MemoryEngineState:
    return MemoryEngineState()


@pytest.fixture
def oauth_state() -> OAuthState:
    return OAuthState()


@pytest.fixture
def servers(
    x_state: TwitterState, engine_state: MemoryEngineState, oauth_state: OAuthState
) -> Iterator[dict[str, RunningServer]]:
    running = {
        "x": serve(create_app(x_state)),
        "engine": serve(memory_engine_app(engine_state)),
        "oauth": serve(oauth_app(oauth_state)),
    }
    yield running
    oauth_state.release()
    for server in running.values():
        server.stop()


@pytest.fixture
def env(
    base_env: dict[str, str], servers: dict[str, RunningServer], oauth_state: OAuthState
) -> dict[str, str]:
    return {
        **base_env,
        **oauth_state.settings_env(servers["oauth"].url, ("twitter",)),
        "TWITTER_API_URL": f"{servers['x'].url}/2",
        "MEMORY_ENGINE_URL": servers["engine"].url,
    }


def sync(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_cli("sync", "twitter", "--user", "u1", "--json", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


async def add_account(env: dict[str, str], access_token: str, **tokens: Any) -> None:
    """Store the account as the product's server would (in the database the CLI reads)."""
    settings = Settings(_env_file=None, database_url=env["DATABASE_URL"])  # type: ignore[call-arg]
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            await save_account(
                session, user_id="u1", provider_id="twitter", access_token=access_token, **tokens
            )
    finally:
        await services.aclose()


async def test_cli_full_then_incremental_sync_into_the_memory_engine(
    env: dict[str, str], x_state: TwitterState, engine_state: MemoryEngineState
) -> None:
    x_state.tokens["plain-token"] = ME
    await add_account(env, "plain-token")
    own = [x_state.add_tweet(ME, f"post {i}", created_at=days_ago(i)) for i in range(120)]
    mention = x_state.add_tweet(
        BOB, "@alice look", mentions=[ME], media=[("photo", "https://p/x.jpg")]
    )
    x_state.like(ME, mention)

    first = sync(env)

    assert first["status"] == "ok"
    assert first["upserted"] == 122  # the liked mention is sent twice, one record
    assert engine_state.ids("u1") == {f"twitter:u1:{i}" for i in [*own, mention]}
    record = engine_state.records[f"twitter:u1:{mention}"]
    assert record["metadata"]["kind"] == "mention"
    assert record["metadata"]["media"][0]["url"] == "https://p/x.jpg"
    assert record["url"] == f"https://x.com/bob/status/{mention}"

    x_state.log.clear()
    quiet = sync(env)
    assert quiet["upserted"] == 0
    assert [r.endpoint for r in x_state.log] == ["tweets", "mentions", "likes"]


async def test_401_refreshes_with_rotation_and_the_sync_continues(
    env: dict[str, str],
    x_state: TwitterState,
    oauth_state: OAuthState,
    engine_state: MemoryEngineState,
) -> None:
    grant = oauth_state.issue("twitter", "alice", "tweet.read users.read like.read offline.access")
    first_refresh = grant.refresh_token
    assert first_refresh is not None
    x_state.tokens[grant.access_token] = ME

    def link(new_access: str, old_access: str | None) -> None:
        if old_access is not None:
            x_state.tokens.pop(old_access, None)  # X stops accepting the rotated-away token
        x_state.tokens[new_access] = ME

    oauth_state.on_token = link
    await add_account(
        env,
        grant.access_token,
        refresh_token=first_refresh,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    own = [x_state.add_tweet(ME, f"post {i}", created_at=days_ago(i / 24)) for i in range(150)]
    x_state.expire_after(grant.access_token, 2)  # /users/me and the first page, then 401

    summary = sync(env, "--max-results", "1000")

    assert summary["status"] == "ok"
    assert oauth_state.token_calls("twitter") == 1
    assert first_refresh in oauth_state.spent
    statuses = [(r.endpoint, r.status) for r in x_state.log]
    assert statuses[:4] == [("me", 200), ("tweets", 200), ("tweets", 401), ("tweets", 200)]
    assert {f"twitter:u1:{i}" for i in own} <= engine_state.ids("u1")

    # the rotated pair was stored before it was used: the next sync needs no refresh
    current = oauth_state.access_tokens
    with sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///")) as db:
        stored = db.execute(
            'SELECT "accessToken", "refreshToken" FROM account WHERE "providerId" = ?',
            ("twitter",),
        ).fetchone()
    assert stored[0] in current
    assert stored[0] in x_state.tokens
    assert stored[1] == current[stored[0]].refresh_token != first_refresh
