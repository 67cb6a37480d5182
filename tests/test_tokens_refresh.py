"""Token refresh against the emulated token endpoints of Google, GitHub and X (in-process).

What is proved here: refresh before expiry (margin), once on a 401, Google keeps its refresh
token, GitHub/X rotate theirs and the rotated one is stored, X client authentication
(confidential Basic, public client_id), transient 503s retried, a lost answer after rotation
ends in `reauth_required` with a clear message, tokens that cannot refresh are used as they
are, a refused client is a configuration error, concurrent refreshes in one process make one
call on both databases, and no token or secret appears in an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from structlog.testing import capture_logs

from ingestion.config import Settings
from ingestion.errors import ConfigurationError, ReauthRequired, RetryableError
from ingestion.providers import registry
from ingestion.services import Services
from ingestion.storage.accounts import find_account, save_account
from ingestion.storage.db import upgrade
from ingestion.storage.state import SyncStateStore
from tests.conftest import run_cli
from tests.emulators.oauth import OAuthState
from tests.tokens_probe import ProbeApi, ProbeProvider

USER = "u1"


def make_settings(database_url: str, state: OAuthState, oauth_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {k.lower(): v for k, v in state.settings_env(oauth_url).items()}
    values.update(database_url=database_url, log_format="json", **extra)
    return Settings(**values)


@pytest.fixture
def sqlite_url(migrated_sqlite_url: str) -> str:
    """This module's tests start from a migrated database."""
    return migrated_sqlite_url


@pytest.fixture
async def services(
    sqlite_url: str,
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Services]:
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    state, url = oauth
    settings = make_settings(sqlite_url, state, url, github_api_url=probe[1])
    opened = await Services.open(settings)
    yield opened
    await opened.aclose()


async def store(
    services: Services,
    provider_id: str,
    access: str,
    refresh: str | None,
    expires_in: float | None,
    user: str = USER,
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in is not None else None
    async with services.db.session() as session:
        await save_account(
            session,
            user_id=user,
            provider_id=provider_id,
            access_token=access,
            refresh_token=refresh,
            expires_at=expires,
        )


async def row(services: Services, provider_id: str, user: str = USER) -> Any:
    async with services.db.session() as session:
        return await find_account(session, user, provider_id)


async def test_refresh_happens_within_the_margin_and_not_before(
    services: Services, oauth: tuple[OAuthState, str], probe: tuple[ProbeApi, str]
) -> None:
    state, _ = oauth
    api, _ = probe
    state.on_token = api.link("octo")
    grant = state.issue("github", "octo")
    api.tokens[grant.access_token] = "octo"
    await store(services, "github", grant.access_token, grant.refresh_token, expires_in=600)

    tokens = services.tokens.source(USER, "github")
    assert await tokens.access_token() == grant.access_token  # 10 min left > 5 min margin
    assert state.token_calls("github") == 0

    old_access, old_refresh = grant.access_token, grant.refresh_token
    await store(services, "github", old_access, old_refresh, expires_in=240)
    tokens = services.tokens.source(USER, "github")
    new_access = await tokens.access_token()  # 4 min left < 5 min margin
    assert state.token_calls("github") == 1
    assert new_access != old_access
    assert new_access == grant.access_token  # what the emulator issued
    stored = await row(services, "github")
    assert stored.access_token == new_access
    assert stored.refresh_token == grant.refresh_token != old_refresh  # rotated and stored
    assert stored.access_token_expires_at > datetime.now(UTC) + timedelta(hours=7)
    assert stored.refresh_token_expires_at is not None
    assert await tokens.access_token() == new_access  # cached, no second call
    assert state.token_calls("github") == 1

    summary = await services.engine.run("github", USER)
    assert summary.status == "ok"
    assert api.unauthorized == 0


async def test_401_refreshes_once_and_retries_the_request(
    services: Services, oauth: tuple[OAuthState, str], probe: tuple[ProbeApi, str]
) -> None:
    state, _ = oauth
    api, _ = probe
    state.on_token = api.link("octo")
    grant = state.issue("github", "octo")
    # The stored access token looks valid for hours but the API refuses it (revoked session).
    await store(services, "github", "gho_refused", grant.refresh_token, expires_in=3 * 3600)

    summary = await services.engine.run("github", USER)

    assert summary.status == "ok"
    assert api.unauthorized == 1
    assert state.token_calls("github") == 1
    assert (await row(services, "github")).access_token == grant.access_token


async def test_401_after_another_worker_refreshed_uses_the_stored_token(
    services: Services, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    grant = state.issue("github", "octo")
    await store(services, "github", grant.access_token, grant.refresh_token, expires_in=3600)
    tokens = services.tokens.source(USER, "github")
    assert await tokens.refresh_after_unauthorized("gho_older_token") == grant.access_token
    assert state.token_calls("github") == 0


async def test_google_refresh_keeps_the_refresh_token(
    services: Services, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    grant = state.issue("google", "ann", scope="https://www.googleapis.com/auth/gmail.readonly")
    await store(services, "google", grant.access_token, grant.refresh_token, expires_in=-60)

    new_access = await services.tokens.source(USER, "google").access_token()

    stored = await row(services, "google")
    assert state.token_calls("google") == 1
    assert new_access == stored.access_token == grant.access_token
    assert stored.refresh_token == grant.refresh_token  # Google sent none: the old one is kept
    assert stored.scope == "https://www.googleapis.com/auth/gmail.readonly"
    expires_in = (stored.access_token_expires_at - datetime.now(UTC)).total_seconds()
    assert 3500 < expires_in <= 3600


@pytest.mark.parametrize("confidential", [True, False], ids=["confidential", "public"])
async def test_x_client_authentication_and_rotation(
    sqlite_url: str, oauth: tuple[OAuthState, str], confidential: bool
) -> None:
    state, url = oauth
    if not confidential:
        state.clients["twitter"] = ("twitter-public", None)
    settings = make_settings(sqlite_url, state, url)
    services = await Services.open(settings)
    try:
        grant = state.issue("twitter", "xuser")
        first_refresh = grant.refresh_token
        await store(services, "twitter", grant.access_token, grant.refresh_token, expires_in=30)
        await services.tokens.source(USER, "twitter").access_token()
        stored = await row(services, "twitter")
        assert stored.refresh_token == grant.refresh_token != first_refresh
        assert first_refresh in state.spent
        assert state.token_calls("twitter") == 1
    finally:
        await services.aclose()


async def test_token_endpoint_503_twice_then_success(
    services: Services, oauth: tuple[OAuthState, str], probe: tuple[ProbeApi, str]
) -> None:
    state, _ = oauth
    api, _ = probe
    state.on_token = api.link("octo")
    grant = state.issue("github", "octo")
    await store(services, "github", grant.access_token, grant.refresh_token, expires_in=-1)
    state.fail_next("github", 503, times=2, body={"message": "Service Unavailable"})

    summary = await services.engine.run("github", USER)

    assert summary.status == "ok"
    assert state.token_calls("github") == 3
    assert (await row(services, "github")).access_token == grant.access_token


async def test_token_endpoint_down_is_retryable_not_reauth(
    services: Services, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    grant = state.issue("github", "octo")
    first_refresh = grant.refresh_token
    await store(services, "github", grant.access_token, first_refresh, expires_in=-1)
    state.fail_next("github", 503, times=10)
    with pytest.raises(RetryableError, match="retries exhausted"):
        await services.tokens.source(USER, "github").access_token()
    # the refresh token was not spent: the next attempt works
    assert (await row(services, "github")).refresh_token == first_refresh
    state._faults.clear()
    await services.tokens.source(USER, "github").access_token()
    assert (await row(services, "github")).refresh_token == grant.refresh_token != first_refresh


async def test_lost_answer_after_rotation_ends_in_reauth_required(
    sqlite_url: str,
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    state, url = oauth
    settings = make_settings(
        sqlite_url, state, url, github_api_url=probe[1], token_request_timeout=0.5
    )
    services = await Services.open(settings)
    try:
        grant = state.issue("github", "octo")
        spent = grant.refresh_token
        await store(services, "github", grant.access_token, spent, expires_in=-1)
        state.lose_next_answer("github")

        with pytest.raises(ReauthRequired) as caught:
            await services.engine.run("github", USER)

        message = str(caught.value)
        assert "bad_refresh_token" in message
        assert "no answer" in message
        assert "rotated" in message
        assert "ingestion connect" in message
        assert spent not in message
        assert grant.refresh_token not in message
        # one lost call, one definitive refusal: no silent loop
        assert state.token_calls("github") == 2
        view = await SyncStateStore(services.db).load(USER, "github")
        assert view.status == "reauth_required"
        assert view.last_error == message
        assert view.reauth_fingerprint
        # A second attempt fails at once the same way (one call), it does not spin.
        with pytest.raises(ReauthRequired):
            await services.engine.run("github", USER)
        assert state.token_calls("github") == 3
    finally:
        state.release()
        await services.aclose()


async def test_token_without_expiry_or_refresh_is_used_as_is(
    services: Services, oauth: tuple[OAuthState, str], probe: tuple[ProbeApi, str]
) -> None:
    state, _ = oauth
    api, _ = probe
    api.tokens["ghp_personal"] = "octo"
    await store(services, "github", "ghp_personal", None, expires_in=None)
    assert (await services.engine.run("github", USER)).status == "ok"
    assert state.token_calls("github") == 0

    api.tokens.clear()  # the personal access token was revoked
    with pytest.raises(ReauthRequired, match="no refresh token") as caught:
        await services.engine.run("github", USER)
    assert "ghp_personal" not in str(caught.value)


async def test_refused_client_is_a_configuration_error(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, url = oauth
    settings = make_settings(sqlite_url, state, url, google_client_secret="wrong-secret")
    services = await Services.open(settings)
    try:
        grant = state.issue("google", "ann")
        await store(services, "google", grant.access_token, grant.refresh_token, expires_in=-1)
        with pytest.raises(ConfigurationError, match="invalid_client") as caught:
            await services.tokens.source(USER, "google").access_token()
        assert "wrong-secret" not in str(caught.value)
        # a wrong app does not kill the user's grant
        assert (await row(services, "google")).refresh_token == grant.refresh_token
    finally:
        await services.aclose()


@pytest.mark.parametrize(
    ("settings_change", "code"),
    [
        ({"google_client_secret": None}, "invalid_request"),
        ({"google_client_id": "x"}, "invalid_client"),
    ],
)
async def test_google_refusing_the_app_is_a_configuration_error_not_a_dead_grant(
    sqlite_url: str,
    oauth: tuple[OAuthState, str],
    settings_change: dict[str, Any],
    code: str,
) -> None:
    """Google says `invalid_request` ("client_secret is missing.") or `invalid_client` for a
    wrongly set up app: the error names the variables, the grant is kept, and the account is
    not marked `reauth_required`."""
    state, url = oauth
    settings = make_settings(sqlite_url, state, url, **settings_change)
    services = await Services.open(settings)
    try:
        grant = state.issue("google", "ann")
        await store(services, "google", grant.access_token, grant.refresh_token, expires_in=-1)
        with pytest.raises(ConfigurationError, match=code) as caught:
            await services.engine.run("gmail", USER)
        message = str(caught.value)
        assert message.startswith("GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET: ")
        assert "\n" not in message
        assert (await row(services, "google")).refresh_token == grant.refresh_token
        sync_state = await services.engine.state.load(USER, "gmail")
        assert sync_state.status == "error"
    finally:
        await services.aclose()


def test_cli_sync_exits_2_naming_the_variable_when_google_refuses_the_app(
    sqlite_url: str, oauth: tuple[OAuthState, str], base_env: dict[str, str]
) -> None:
    state, url = oauth
    env = {**base_env, **state.settings_env(url), "DATABASE_URL": sqlite_url}
    env.pop("GOOGLE_CLIENT_SECRET")
    grant = state.issue("google", "ann")
    added = run_cli(
        "accounts",
        "add",
        "gmail",
        "--user",
        USER,
        "--access-token",
        grant.access_token,
        "--refresh-token",
        grant.refresh_token or "",
        "--expires-at",
        "2000-01-01T00:00:00Z",
        env=env,
    )
    assert added.returncode == 0, added.stderr

    result = run_cli("sync", "gmail", "--user", USER, env=env)

    assert result.returncode == 2, result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if "GOOGLE_CLIENT" in line and not line.startswith("{")  # JSON log lines aside
    ]
    assert len(lines) == 1
    assert "invalid_request" in lines[0]
    assert "Traceback" not in result.stderr
    listed = run_cli("status", "--json", env=env)
    assert "reauth_required" not in listed.stdout


async def test_missing_client_id_names_the_variable(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, url = oauth
    settings = Settings(database_url=sqlite_url, twitter_token_url=url + "/twitter/2/oauth2/token")
    services = await Services.open(settings)
    try:
        grant = state.issue("twitter", "xuser")
        await store(services, "twitter", grant.access_token, grant.refresh_token, expires_in=-1)
        with pytest.raises(ConfigurationError, match="TWITTER_CLIENT_ID is not set"):
            await services.tokens.source(USER, "twitter").access_token()
    finally:
        await services.aclose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_concurrent_refreshes_in_one_process_make_one_call(
    database: str, request: pytest.FixtureRequest, oauth: tuple[OAuthState, str]
) -> None:
    state, url = oauth
    state.delay = 0.2
    db_url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url")
    settings = make_settings(db_url, state, url)
    if database == "postgresql":
        await asyncio.to_thread(upgrade, settings)
    services = await Services.open(settings)
    try:
        grant = state.issue("twitter", "xuser")
        await store(services, "twitter", grant.access_token, grant.refresh_token, expires_in=-1)
        sources = [services.tokens.source(USER, "twitter") for _ in range(6)]
        results = await asyncio.gather(*(s.access_token() for s in sources))
        assert set(results) == {grant.access_token}
        assert state.token_calls("twitter") == 1
        assert (await row(services, "twitter")).refresh_token == grant.refresh_token
    finally:
        await services.aclose()


@pytest.mark.parametrize(
    ("provider_id", "error"),
    [("google", "invalid_grant"), ("github", "bad_refresh_token"), ("twitter", "invalid_request")],
)
async def test_spent_or_revoked_refresh_token_is_reauth_for_every_provider(
    services: Services, oauth: tuple[OAuthState, str], provider_id: str, error: str
) -> None:
    state, _ = oauth
    grant = state.issue(provider_id, "someone")
    refresh = grant.refresh_token
    assert refresh is not None
    await store(services, provider_id, grant.access_token, refresh, expires_in=-1)
    state.revoke(refresh)

    with pytest.raises(ReauthRequired, match=error) as caught:
        await services.tokens.source(USER, provider_id).access_token()

    assert state.token_calls(provider_id) == 1  # a dead grant is not retried
    assert refresh not in str(caught.value)
    assert (await row(services, provider_id)).refresh_token == refresh  # row left as it was


def _refreshes(provider: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "ingestion_token_refreshes_total", {"provider": provider, "outcome": outcome}
    )
    return value or 0.0


async def test_refresh_outcomes_are_counted_and_logged_with_the_account(
    services: Services, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    state.delay = 0.1
    grant = state.issue("twitter", "xuser")
    await store(services, "twitter", grant.access_token, grant.refresh_token, expires_in=-1)
    ok, reused = _refreshes("twitter", "ok"), _refreshes("twitter", "reused")
    with capture_logs() as logs:
        sources = [services.tokens.source(USER, "twitter") for _ in range(4)]
        await asyncio.gather(*(s.access_token() for s in sources))
    assert _refreshes("twitter", "ok") - ok == 1
    assert _refreshes("twitter", "reused") - reused == 3  # the others found it refreshed
    [done] = [e for e in logs if e["event"] == "access token refreshed"]
    assert (done["user_id"], done["provider"]) == (USER, "twitter")
    assert grant.access_token not in str(logs)


async def test_exhausted_retries_are_counted_as_failed(
    services: Services, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    grant = state.issue("github", "octo")
    await store(services, "github", grant.access_token, grant.refresh_token, expires_in=-1)
    state.fail_next("github", 503, times=10)
    failed = _refreshes("github", "failed")
    with pytest.raises(RetryableError):
        await services.tokens.source(USER, "github").access_token()
    assert _refreshes("github", "failed") - failed == 1


async def test_a_refusal_after_a_503_does_not_blame_a_lost_answer(
    services: Services, oauth: tuple[OAuthState, str]
) -> None:
    """Only a request whose answer was lost may have rotated the token unseen; a 503 did not."""
    state, _ = oauth
    grant = state.issue("github", "octo")
    assert grant.refresh_token is not None
    await store(services, "github", grant.access_token, grant.refresh_token, expires_in=-1)
    state.fail_next("github", 503, times=1)
    state.revoke(grant.refresh_token)
    with pytest.raises(ReauthRequired) as caught:
        await services.tokens.source(USER, "github").access_token()
    assert "no answer" not in str(caught.value)
    assert state.token_calls("github") == 2


async def test_401_without_a_refresh_token_names_the_user_to_reconnect(
    services: Services,
) -> None:
    await store(services, "github", "gho_only_access", None, expires_in=None)
    tokens = services.tokens.source(USER, "github")
    with pytest.raises(ReauthRequired) as caught:
        await tokens.refresh_after_unauthorized("gho_only_access")
    message = str(caught.value)
    assert f"github account of user {USER!r} needs to be reconnected" in message
    assert f"--user {USER}`" in message


@pytest.mark.parametrize("failures", [1, 5])
async def test_rotated_tokens_survive_a_database_failure_while_they_are_stored(
    pg_url: str, oauth: tuple[OAuthState, str], failures: int
) -> None:
    """X rotates its refresh token: once it answered, the stored one is spent. A real failure of
    the write that stores the new pair (a trigger fails the next `failures` updates of the
    account row) must not lose it: it is written again in a new transaction; past the last
    attempt the error says the account may need reconnecting."""
    state, url = oauth
    settings = make_settings(pg_url, state, url)
    await asyncio.to_thread(upgrade, settings)
    services = await Services.open(settings)
    try:
        grant = state.issue("twitter", "xuser")
        spent = grant.refresh_token
        await store(services, "twitter", grant.access_token, spent, expires_in=-1)
        async with services.db.session() as session:
            # A sequence is not transactional: the failed writes' rollbacks do not undo it.
            await session.execute(text("CREATE SEQUENCE account_write_failures"))
            await session.execute(
                text(
                    "CREATE FUNCTION fail_account_writes() RETURNS trigger AS $$ BEGIN "
                    f"IF nextval('account_write_failures') <= {failures} THEN "
                    "RAISE EXCEPTION 'injected write failure'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            await session.execute(
                text(
                    'CREATE TRIGGER fail_account_writes BEFORE UPDATE ON "account" '
                    "FOR EACH ROW EXECUTE FUNCTION fail_account_writes()"
                )
            )
        source = services.tokens.source(USER, "twitter")
        if failures == 1:
            assert await source.access_token() == grant.access_token
            stored = await row(services, "twitter")
            assert stored.refresh_token == grant.refresh_token != spent
            assert state.token_calls("twitter") == 1
        else:
            with pytest.raises(RetryableError) as caught:
                await source.access_token()
            assert "would not store the new tokens" in str(caught.value)
            assert "ingestion connect" in str(caught.value)
            assert grant.refresh_token not in str(caught.value)
            assert state.token_calls("twitter") == 1
    finally:
        await services.aclose()
