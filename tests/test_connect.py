"""`ingestion connect` end to end against the emulated authorization servers.

The test plays the person: it reads the consent URL the CLI prints (`--no-browser`), follows it
to the emulated authorization endpoint (scripted consent), and delivers the redirect to the
CLI's loopback listener, on the port the CLI bound (port 0: the redirect URI in the consent URL
names it, so no test races another for a port). Then the stored account is checked through
`accounts list` (no tokens printed) and, for GitHub, used by a real sync. The X flow, refused
consent and a missing redirect run the same code in-process (quicker).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from ingestion.config import Settings
from ingestion.connect import ConnectResult, connect_account
from ingestion.errors import ConfigurationError, PermanentError
from ingestion.providers.gmail.auth import GOOGLE_OAUTH
from ingestion.services import Services
from ingestion.storage.accounts import find_account
from ingestion.storage.models import Account, User
from ingestion.token_endpoint import interpret_token_answer
from tests.conftest import INGESTION, run_cli
from tests.emulators.oauth import OAuthState
from tests.emulators.server import free_port, serve
from tests.tokens_probe import ProbeApi, create_probe_app

ROOT = Path(__file__).resolve().parents[1]
USER = "person-1"

pytestmark = pytest.mark.timeout(300)  # CLI processes start slowly on a busy 2-core machine


def env_for(base_env: dict[str, str], oauth: tuple[OAuthState, str]) -> dict[str, str]:
    state, url = oauth
    env = {**base_env, **state.settings_env(url)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_connect(
    env: dict[str, str], provider: str, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    """Start `ingestion connect` and return the process and the consent URL it printed."""
    proc = subprocess.Popen(
        [*INGESTION, "connect", provider, "--user", USER, "--no-browser", *extra],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("http"):
            return proc, line.strip()
    _, stderr = proc.communicate(timeout=60)
    raise AssertionError(f"connect printed no URL; stderr: {stderr[-2000:]}")


def redirect_uri(url: str) -> str:
    """The loopback redirect URI a consent URL carries (with the port the listener bound)."""
    [uri] = parse_qs(urlsplit(url).query)["redirect_uri"]
    return uri


def consent(url: str) -> httpx.Response:
    """Follow the consent URL and deliver the redirect to the CLI's loopback listener."""
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(f"{redirect_uri(url)}?")
    return httpx.get(location)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = proc.communicate(timeout=240)
    return proc.returncode, stdout, stderr


def test_connect_google_stores_a_refreshable_account(
    base_env: dict[str, str], oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    env = env_for(base_env, oauth)
    proc, url = start_connect(env, "gmail")
    port = urlsplit(redirect_uri(url)).port
    assert port
    delivered = consent(url)
    code, stdout, stderr = finish(proc)

    assert delivered.status_code == 200
    assert code == 0, stderr[-2000:]
    assert "connected google account sub-person" in stdout
    asked = state.authorize_requests[0]
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["code_challenge"]) == 43
    assert asked["access_type"] == "offline"
    assert asked["prompt"] == "consent"
    assert asked["redirect_uri"] == f"http://127.0.0.1:{port}/callback"
    scopes = asked["scope"].split()
    assert "https://www.googleapis.com/auth/gmail.readonly" in scopes
    assert "https://www.googleapis.com/auth/calendar.readonly" in scopes
    assert state.token_calls("google", "authorization_code") == 1

    listed = json.loads(
        run_cli("accounts", "list", "--json", env=env, cwd=ROOT, timeout=240).stdout
    )
    assert [(a["provider"], a["userId"], a["accountId"]) for a in listed] == [
        ("google", USER, "sub-person")
    ]
    assert listed[0]["refreshToken"] is True
    assert listed[0]["accessTokenExpiresAt"]
    (grant,) = state.grants.values()
    for secret in (grant.access_token, grant.refresh_token, "google-secret"):
        assert secret not in stdout + stderr
        assert secret not in json.dumps(listed)


async def run_flow(
    settings: Settings, provider: str, *, deliver: bool = True
) -> tuple[ConnectResult, Services]:
    """The flow in-process; the announced URL is followed in a thread (the person)."""
    services = await Services.open(settings)

    def announce(url: str) -> None:
        if deliver:
            threading.Thread(target=consent, args=(url,), daemon=True).start()

    try:
        result = await connect_account(
            settings,
            services.db,
            services.http,
            provider=provider,
            user_id=USER,
            open_browser=False,
            timeout=30,
            announce=announce,
        )
    except BaseException:
        await services.aclose()
        raise
    return result, services


def settings_for(sqlite_url: str, oauth: tuple[OAuthState, str]) -> Settings:
    state, url = oauth
    values = {k.lower(): v for k, v in state.settings_env(url).items()}
    return Settings(database_url=sqlite_url, **values)


async def test_connect_x_public_client_uses_pkce_and_gets_a_refresh_token(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    state.clients["twitter"] = ("twitter-public", None)
    result, services = await run_flow(settings_for(sqlite_url, oauth), "twitter")
    try:
        asked = state.authorize_requests[0]
        assert asked["scope"] == "tweet.read users.read like.read offline.access"
        assert asked["code_challenge_method"] == "S256"
        assert result.account_provider == "twitter"
        assert result.has_refresh_token
        assert state.token_calls("twitter", "authorization_code") == 1
        async with services.db.session() as session:
            account = await find_account(session, USER, "twitter")
        (grant,) = state.grants.values()
        assert account is not None
        assert account.refresh_token == grant.refresh_token
        assert account.access_token == grant.access_token
    finally:
        await services.aclose()


async def test_connect_denied_consent_fails_and_stores_nothing(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    state.consent_decision = "deny"
    settings = settings_for(sqlite_url, oauth)
    with pytest.raises(PermanentError, match="authorization was not granted: access_denied"):
        await run_flow(settings, "calendar")
    assert state.token_calls("google", "authorization_code") == 0
    assert state.grants == {}
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            assert (await session.execute(select(Account))).scalars().all() == []
            assert (await session.execute(select(User))).scalars().all() == []
            assert await find_account(session, USER, "google") is None
    finally:
        await services.aclose()


async def test_connect_times_out_without_a_redirect(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    settings = settings_for(sqlite_url, oauth)
    services = await Services.open(settings)
    try:
        with pytest.raises(PermanentError, match=r"no authorization arrived within 0\.3s"):
            await connect_account(
                settings,
                services.db,
                services.http,
                provider="github",
                user_id=USER,
                open_browser=False,
                timeout=0.3,
                announce=lambda url: None,
            )
    finally:
        await services.aclose()


def test_connect_github_then_sync_uses_the_new_token(
    base_env: dict[str, str], oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    api = ProbeApi()
    state.on_token = api.link("octo")
    probe = serve(create_probe_app(api))
    try:
        env = env_for(base_env, oauth)
        env.update(GITHUB_API_URL=probe.url, INGESTION_PLUGINS="tests.tokens_probe_plugin")
        proc, url = start_connect(env, "github")
        consent(url)
        code, _, stderr = finish(proc)
        assert code == 0, stderr[-2000:]

        synced = run_cli("sync", "github", "--user", USER, "--json", env=env, cwd=ROOT, timeout=240)
        assert synced.returncode == 0, synced.stderr[-2000:]
        assert json.loads(synced.stdout)["status"] == "ok"
        assert api.unauthorized == 0
        assert state.token_calls("github") == 0  # fresh token: no refresh needed
    finally:
        probe.stop()


def test_connect_without_client_id_is_a_one_line_error(base_env: dict[str, str]) -> None:
    result = run_cli(
        "connect", "github", "--user", USER, "--no-browser", env=base_env, cwd=ROOT, timeout=240
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: GITHUB_CLIENT_ID is not set: the github OAuth app is needed to refresh or "
        "connect an account"
    ]


def test_connect_google_web_client_takes_the_exact_registered_redirect_uri(
    base_env: dict[str, str], oauth: tuple[OAuthState, str]
) -> None:
    """A Web-application client accepts only its registered URI: `--redirect-uri` gives it."""
    state, _ = oauth
    port = free_port()
    registered = f"http://127.0.0.1:{port}/oauth2/callback"
    state.google_client_type = "web"
    state.google_redirect_uris = {registered}
    env = env_for(base_env, oauth)
    proc, url = start_connect(env, "gmail", "--redirect-uri", registered)
    delivered = consent(url)
    code, stdout, stderr = finish(proc)

    assert delivered.status_code == 200
    assert code == 0, stderr[-2000:]
    assert "connected google account" in stdout
    assert state.authorize_requests[0]["redirect_uri"] == registered
    assert state.token_calls("google", "authorization_code") == 1


async def test_connect_google_web_client_without_its_uri_says_what_to_register(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    """Any loopback port is for Desktop-app clients only: Google shows redirect_uri_mismatch
    and never redirects; the error names the URI to register and OAUTH_REDIRECT_URI."""
    state, _ = oauth
    state.google_client_type = "web"
    state.google_redirect_uris = {"http://127.0.0.1:8765/oauth2/callback"}
    settings = settings_for(sqlite_url, oauth)
    services = await Services.open(settings)
    pages: list[httpx.Response] = []
    try:
        with pytest.raises(PermanentError) as caught:
            await connect_account(
                settings,
                services.db,
                services.http,
                provider="gmail",
                user_id=USER,
                open_browser=False,
                timeout=1,
                announce=lambda url: pages.append(httpx.get(url)),
            )
    finally:
        await services.aclose()
    assert pages[0].status_code == 400
    assert "redirect_uri_mismatch" in pages[0].text
    message = str(caught.value)
    assert "\n" not in message
    assert "redirect_uri_mismatch" in message
    assert "OAUTH_REDIRECT_URI" in message
    assert "http://127.0.0.1:" in message


async def test_connect_uses_oauth_redirect_uri_from_the_settings(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, url = oauth
    port = free_port()
    registered = f"http://localhost:{port}/cb"
    state.google_client_type = "web"
    state.google_redirect_uris = {registered}
    values = {k.lower(): v for k, v in state.settings_env(url).items()}
    settings = Settings(database_url=sqlite_url, oauth_redirect_uri=registered, **values)
    services = await Services.open(settings)

    def person(consent_url: str) -> None:
        answer = httpx.get(consent_url, follow_redirects=False)
        location = answer.headers["location"]
        assert location.startswith(f"{registered}?")
        threading.Thread(target=httpx.get, args=(location,), daemon=True).start()

    try:
        result = await connect_account(
            settings,
            services.db,
            services.http,
            provider="calendar",
            user_id=USER,
            open_browser=False,
            timeout=30,
            announce=person,
        )
    finally:
        await services.aclose()
    assert result.account_provider == "google"
    assert state.authorize_requests[0]["redirect_uri"] == registered


@pytest.mark.parametrize(
    "value", ["https://app.example.com/api/auth/callback/google", "http://127.0.0.1/callback"]
)
def test_a_redirect_uri_that_is_not_a_loopback_url_with_a_port_stops_at_start(
    base_env: dict[str, str], value: str
) -> None:
    result = run_cli(
        "connect", "gmail", "--user", USER, env={**base_env, "OAUTH_REDIRECT_URI": value}
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "OAUTH_REDIRECT_URI" in result.stderr


def test_google_redirect_uri_mismatch_at_the_token_endpoint_is_one_configuration_line() -> None:
    answer = httpx.Response(
        400, json={"error": "redirect_uri_mismatch", "error_description": "Bad Request"}
    )
    with pytest.raises(ConfigurationError) as caught:
        interpret_token_answer(answer, datetime.now(UTC), GOOGLE_OAUTH)
    assert str(caught.value).startswith("OAUTH_REDIRECT_URI: ")
    assert "redirect_uri_mismatch" in str(caught.value)
