"""Tokens encrypted at rest in Better Auth's own format, checked against the real package.

The product's side is the `better-auth` npm package itself (pinned in tests/betterauth/, run
by Node through tests/better_auth_node.py), never a copy of its code. What is proved:

- both directions on random tokens (Better Auth's ciphertexts opened by us, ours by Better
  Auth), with a single secret and with versioned secrets after rotations (legacy bare hex,
  `$ba$1$`, `$ba$2$` side by side), and that both sides refuse a retired version alike;
- `BETTER_AUTH_SECRETS` parsed as Better Auth parses it (same versions, same refusals);
- a full GitHub sync on PostgreSQL, beside Better Auth's Prisma schema (left unchanged), whose
  refresh rotates the refresh token and writes values Better Auth decrypts; `accounts add` and
  `connect` write encrypted values too;
- a wrong or missing secret fails the sync with one line naming BETTER_AUTH_SECRET, status
  `error`, no token request, no API call, no token in any output;
- plain rows are used as they are and written back encrypted.

Without Node or the npm registry the tests are skipped with the reason; with `CI` set that is
a failure instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import string
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from ingestion.config import Settings, describe_error
from ingestion.providers import registry
from ingestion.queue import Keys, RedisJobQueue
from ingestion.queue.jobs import Job
from ingestion.services import Services
from ingestion.storage.accounts import find_account, save_account
from ingestion.storage.encryption import TokenCipher, UnreadableToken
from ingestion.storage.state import SyncStateStore
from tests.better_auth_node import BetterAuthError, BetterAuthNode, install
from tests.conftest import run_cli
from tests.emulators.github import GitHubState, create_app, seed_activity
from tests.emulators.oauth import OAuthState
from tests.emulators.server import serve
from tests.queue_helpers import running_worker, wait_for
from tests.test_connect import run_flow, settings_for
from tests.test_storage import BETTER_AUTH_PRISMA_SQL, SCHEMA_SNAPSHOT_SQL
from tests.tokens_probe import ProbeApi, ProbeProvider

pytestmark = pytest.mark.timeout(300)  # CLI and Node processes start slowly on 2 busy cores

SECRET_OLD = "old-single-secret-of-the-product-0123456789abcdef"
SECRET_1 = "first-versioned-secret-after-rotation-0123456789"
SECRET_2 = "second-versioned-secret-current-0123456789abcdef"
HEX = re.compile(r"[0-9a-f]+")


@pytest.fixture(scope="session")
def better_auth() -> BetterAuthNode:
    problem = install()
    if problem is not None:
        reason = f"better-auth {BetterAuthNode().version} could not be installed: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the package is required)")
        pytest.skip(reason)
    return BetterAuthNode()


def cipher(secret: str | None = None, secrets_: str | None = None) -> TokenCipher:
    return TokenCipher.from_settings(
        Settings(better_auth_secret=secret, better_auth_secrets=secrets_)
    )


def random_tokens(count: int) -> list[str]:
    """Token-shaped strings of many lengths, a few with non-ASCII text and an ID-token size."""
    rng = random.Random(secrets.randbits(32))
    alphabet = string.ascii_letters + string.digits + "-._~/+="
    tokens = [
        rng.choice(("ya29.", "1//", "gho_", "ghr_", "xat_", ""))
        + "".join(rng.choices(alphabet, k=rng.randint(1, 400)))
        for _ in range(count)
    ]
    tokens += ["é", "tøken-✓-" + secrets.token_urlsafe(40), "eyJ" + "a" * 3000]
    return tokens


# --- the format, both directions ---------------------------------------------------------------


def test_single_secret_both_directions(better_auth: BetterAuthNode) -> None:
    tokens = random_tokens(40)
    ours = cipher(SECRET_OLD)

    theirs = better_auth.values([("encrypt", t) for t in tokens], secret=SECRET_OLD)
    for token, value in zip(tokens, theirs, strict=True):
        assert HEX.fullmatch(value), "bare lowercase hex with a single secret"
        assert len(value) == 2 * (24 + len(token.encode()) + 16)  # nonce, ciphertext, tag
        assert ours.open(value, "accessToken") == token

    sealed = [ours.seal(t) for t in tokens]
    for token, value in zip(tokens, sealed, strict=True):
        assert HEX.fullmatch(value)
        assert len(value) == 2 * (24 + len(token.encode()) + 16)
    assert ours.seal(tokens[0]) != sealed[0], "a fresh random nonce each time"
    assert ours.single is not None
    assert ours.single.hex() not in repr(ours) + str(ours), "keys never in a repr"
    requests = [("decrypt", v) for v in sealed] + [("read", v) for v in sealed]
    assert better_auth.values(requests, secret=SECRET_OLD) == tokens + tokens


def test_versioned_secrets_after_rotations_both_directions(better_auth: BetterAuthNode) -> None:
    tokens = random_tokens(10)
    # The product's history: one secret, then BETTER_AUTH_SECRETS with the old one kept as
    # the legacy secret, then a second rotation (spaces as Better Auth tolerates them).
    before = better_auth.values([("write", t) for t in tokens], secret=SECRET_OLD)
    first = better_auth.values(
        [("write", t) for t in tokens], secret=SECRET_OLD, secrets=f"1:{SECRET_1}"
    )
    current_env = f" 2 : {SECRET_2} , 1:{SECRET_1}"
    second, config = better_auth.call(
        [("write", t) for t in tokens], secret=SECRET_OLD, secrets=current_env
    )
    assert all(HEX.fullmatch(v) for v in before)
    assert all(v.startswith("$ba$1$") for v in first)
    assert all(isinstance(v, str) and v.startswith("$ba$2$") for v in second)
    assert config == {"mode": "versioned", "versions": [2, 1], "current": 2, "legacy": True}

    ours = cipher(SECRET_OLD, current_env)
    assert Settings(better_auth_secrets=current_env).better_auth_versions == (
        (2, SECRET_2),
        (1, SECRET_1),
    )
    for stored in (before, first, second):
        assert [ours.open(str(v), "refreshToken") for v in stored] == tokens

    sealed = [ours.seal(t) for t in tokens]
    assert all(re.fullmatch(r"\$ba\$2\$[0-9a-f]+", v) for v in sealed)
    requests = [("decrypt", v) for v in sealed] + [("read", v) for v in sealed]
    assert better_auth.values(requests, secret=SECRET_OLD, secrets=current_env) == tokens + tokens

    # Version 1 retired and no legacy secret: both sides refuse the same values.
    retired = cipher(None, f"3:{secrets.token_hex(20)},2:{SECRET_2}")
    answers, _ = better_auth.call(
        [("read", before[0]), ("read", first[0]), ("read", str(second[0]))],
        secrets=f"3:{secrets.token_hex(20)},2:{SECRET_2}",
    )
    assert isinstance(answers[0], BetterAuthError)
    assert isinstance(answers[1], BetterAuthError)
    assert answers[2] == tokens[0]
    with pytest.raises(UnreadableToken, match="needs BETTER_AUTH_SECRET"):
        retired.open(before[0], "accessToken")
    with pytest.raises(UnreadableToken, match="version 1 of BETTER_AUTH_SECRETS"):
        retired.open(first[0], "accessToken")
    assert retired.open(str(second[0]), "accessToken") == tokens[0]


def test_which_values_are_read_as_plain_text(better_auth: BetterAuthNode) -> None:
    """Better Auth's own test for "encrypted" decides; short hex is the one documented
    difference (it cannot be a ciphertext; Better Auth fails on it, we read it as plain)."""
    ours = cipher(SECRET_OLD)
    plain = ["ya29.a0AfH6", "1//0gLx-refresh", "gho_16C7e42F292c6912E7710c8", "xat_abc", "abc"]
    answers, _ = better_auth.call([("read", v) for v in plain], secret=SECRET_OLD)
    assert answers == plain
    assert [ours.open(v, "accessToken") for v in plain] == plain

    classic_github_token = secrets.token_hex(20)  # 40 hex digits, pre-2021 GitHub format
    (theirs,), _ = better_auth.call([("read", classic_github_token)], secret=SECRET_OLD)
    assert isinstance(theirs, BetterAuthError)
    assert ours.open(classic_github_token, "accessToken") == classic_github_token
    assert ours.needs_sealing(classic_github_token)

    upper = better_auth.values([("write", "ya29.shout")], secret=SECRET_OLD)[0].upper()
    assert better_auth.values([("read", upper)], secret=SECRET_OLD) == ["ya29.shout"]
    assert ours.open(upper, "accessToken") == "ya29.shout"


BAD_SECRETS = ["no-colon-here", "-1:negative", "1:   ", "1:a,1:b", "x:nan", "1:a,"]


@pytest.mark.parametrize("value", BAD_SECRETS)
def test_bad_better_auth_secrets_are_refused_like_better_auth(
    better_auth: BetterAuthNode, value: str
) -> None:
    with pytest.raises(BetterAuthError):
        better_auth.call([], secrets=value)
    with pytest.raises(ValidationError) as refused:
        Settings(better_auth_secrets=value)
    assert describe_error(refused.value).startswith("configuration error: BETTER_AUTH_SECRETS: ")


def test_bad_secret_settings_stop_start_up_with_one_line(base_env: dict[str, str]) -> None:
    hidden = "s3cr3t-value-never-printed"
    for variable, value, message in [
        ("BETTER_AUTH_SECRETS", f"2:{hidden},2:{hidden}x", "version 2 appears twice"),
        ("BETTER_AUTH_SECRETS", hidden, 'entry 1 is not of the form "<version>:<secret>"'),
        ("TOKEN_ENCRYPTION_KEY", hidden, "no longer read"),
    ]:
        result = run_cli("accounts", "list", env={**base_env, variable: value})
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: configuration error: {variable}: {message}")
        assert hidden not in result.stdout + result.stderr


# --- the service on a shared database ----------------------------------------------------------


@pytest.fixture
def github_emulator(oauth: tuple[OAuthState, str]) -> Iterator[tuple[GitHubState, str]]:
    """The GitHub API emulator, accepting exactly the tokens the OAuth emulator issues."""
    state = GitHubState()
    state.add_user("mona")
    seed_activity(state, "mona", repos=1, commits_per_repo=4, issues_per_repo=3)
    oauth_state, _ = oauth

    def link(new: str, old: str | None) -> None:
        state.tokens[new] = "mona"
        if old is not None:
            state.tokens.pop(old, None)

    oauth_state.on_token = link
    server = serve(create_app(state))
    yield state, server.url
    server.stop()


PRODUCT_ACCOUNT_SQL = (
    'INSERT INTO account ("id", "accountId", "providerId", "userId", "accessToken", '
    '"refreshToken", "accessTokenExpiresAt", "createdAt", "updatedAt") VALUES '
    "('acc_github', '583231', 'github', 'usr_1', %s, %s, %s, "
    "'2026-01-01 10:00:00', '2026-01-01 10:00:00')"
)


def test_sync_on_postgresql_refreshes_into_values_better_auth_reads(
    better_auth: BetterAuthNode,
    base_env: dict[str, str],
    pg_url: str,
    oauth: tuple[OAuthState, str],
    github_emulator: tuple[GitHubState, str],
) -> None:
    oauth_state, oauth_url = oauth
    github, github_url = github_emulator
    grant = oauth_state.issue("github", "mona")
    github.tokens[grant.access_token] = "mona"
    old_access, old_refresh = grant.access_token, grant.refresh_token
    assert old_refresh is not None
    # Written by the product before its secret rotation (bare hex, BETTER_AUTH_SECRET), with
    # an access token that has expired: the first request needs a refresh.
    stored = better_auth.values([("write", old_access), ("write", old_refresh)], secret=SECRET_OLD)
    product_env = {"secret": SECRET_OLD, "secrets": f"2:{SECRET_2},1:{SECRET_1}"}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(BETTER_AUTH_PRISMA_SQL)  # type: ignore[arg-type]
        expired = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
        conn.execute(PRODUCT_ACCOUNT_SQL, (*stored, expired))
        before = [r[0] for r in conn.execute(SCHEMA_SNAPSHOT_SQL)]  # type: ignore[arg-type]

    env = {
        **base_env,
        **oauth_state.settings_env(oauth_url),
        "DATABASE_URL": pg_url,
        "GITHUB_API_URL": github_url,
        "BETTER_AUTH_SECRET": SECRET_OLD,
        "BETTER_AUTH_SECRETS": product_env["secrets"],
    }
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    synced = run_cli("sync", "github", "--user", "usr_1", "--json", env=env, timeout=240)
    assert synced.returncode == 0, synced.stderr[-3000:]
    summary = json.loads(synced.stdout)
    assert summary["status"] == "ok"
    assert summary["fetched"] >= 4 + 3

    added = run_cli(
        "accounts", "add", "twitter", "--user", "usr_1", "--access-token", "xat_from_cli",
        "--refresh-token", "xrt_from_cli", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    with psycopg.connect(pg_url, autocommit=True) as conn:
        after = [r[0] for r in conn.execute(SCHEMA_SNAPSHOT_SQL)]  # type: ignore[arg-type]
        rows = {
            provider: (access, refresh)
            for provider, access, refresh in conn.execute(
                'SELECT "providerId", "accessToken", "refreshToken" FROM account'
            )
        }
    assert after == before, "Better Auth's tables must stay as its schema made them"
    assert rows["google"] == ("ya29.product", "1//product-refresh"), "a row not synced is untouched"

    assert oauth_state.token_calls("github") == 1
    (live,) = [g for g in oauth_state.grants.values() if g.user == "mona"]
    assert live.refresh_token != old_refresh, "GitHub rotated the refresh token"
    access, refresh = rows["github"]
    tw_access, tw_refresh = rows["twitter"]
    for value in (access, refresh, tw_access, tw_refresh):
        assert re.fullmatch(r"\$ba\$2\$[0-9a-f]+", value), "written with the current version"
    read = better_auth.values(
        [("read", access), ("read", refresh), ("read", tw_access), ("read", tw_refresh)],
        **product_env,
    )
    assert read == [live.access_token, live.refresh_token, "xat_from_cli", "xrt_from_cli"]
    for token in (old_access, old_refresh, live.access_token, str(live.refresh_token)):
        assert token not in synced.stdout + synced.stderr


async def store_raw(settings: Settings, provider: str, access: str, refresh: str | None) -> None:
    """Store values exactly as given (as the product's server wrote them)."""
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            await save_account(
                session,
                user_id="u1",
                provider_id=provider,
                access_token=access,
                refresh_token=refresh,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
    finally:
        await services.aclose()


@pytest.mark.parametrize("service_secret", ["wrong", "missing"])
def test_a_secret_that_does_not_decrypt_fails_the_sync_with_one_line(
    better_auth: BetterAuthNode,
    base_env: dict[str, str],
    migrated_sqlite_url: str,
    oauth: tuple[OAuthState, str],
    github_emulator: tuple[GitHubState, str],
    service_secret: str,
) -> None:
    oauth_state, oauth_url = oauth
    github, github_url = github_emulator
    grant = oauth_state.issue("github", "mona")
    github.tokens[grant.access_token] = "mona"
    assert grant.refresh_token is not None
    stored = better_auth.values(
        [("write", grant.access_token), ("write", grant.refresh_token)], secret=SECRET_OLD
    )
    env = {
        **base_env,
        **oauth_state.settings_env(oauth_url),
        "DATABASE_URL": migrated_sqlite_url,
        "GITHUB_API_URL": github_url,
    }
    if service_secret == "wrong":
        env["BETTER_AUTH_SECRET"] = SECRET_1
    asyncio.run(store_raw(Settings(database_url=migrated_sqlite_url), "github", *stored))

    result = run_cli("sync", "github", "--user", "u1", env=env, timeout=240)
    assert result.returncode == 2, result.stderr[-3000:]
    # Besides the JSON log lines, exactly one line: the failure.
    failed = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(failed) == 1, result.stderr[-3000:]
    assert failed[0].startswith("error: cannot read the tokens of the github account")
    assert "BETTER_AUTH_SECRET" in failed[0]
    outputs = result.stdout + result.stderr
    status = run_cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    outputs += status.stdout + status.stderr
    (entry,) = [e for e in json.loads(status.stdout)["accounts"] if e["provider"] == "github"]
    assert entry["status"] == "error"
    assert "BETTER_AUTH_SECRET" in entry["lastError"]
    assert oauth_state.token_calls("github") == 0, "no refresh with an unreadable token"
    assert github.log == [], "no API call with an unreadable token"
    for secret in (grant.access_token, grant.refresh_token, *stored, SECRET_1):
        assert secret not in outputs


@pytest.fixture
async def probe_services(
    migrated_sqlite_url: str,
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Services]:
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    state, url = oauth
    values: dict[str, Any] = {k.lower(): v for k, v in state.settings_env(url).items()}
    settings = Settings(
        database_url=migrated_sqlite_url,
        github_api_url=probe[1],
        better_auth_secrets=f"2:{SECRET_2}",
        **values,
    )
    services = await Services.open(settings)
    yield services
    await services.aclose()


async def test_plain_rows_are_used_and_written_back_encrypted(
    better_auth: BetterAuthNode,
    probe_services: Services,
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
) -> None:
    state, _ = oauth
    api, _ = probe
    state.on_token = api.link("octo")
    grant = state.issue("github", "octo")
    api.tokens[grant.access_token] = "octo"
    assert grant.refresh_token is not None
    # The product wrote this row before it turned encryption on.
    await store_raw(probe_services.settings, "github", grant.access_token, grant.refresh_token)

    summary = await probe_services.engine.run("github", "u1")
    assert summary.status == "ok"
    assert api.unauthorized == 0, "the plain token was sent as it is"
    assert state.token_calls("github") == 0

    async with probe_services.db.session() as session:
        row = await find_account(session, "u1", "github")
    assert row is not None
    assert row.access_token is not None
    assert row.refresh_token is not None
    assert row.access_token.startswith("$ba$2$")
    assert row.refresh_token.startswith("$ba$2$")
    assert better_auth.values(
        [("read", row.access_token), ("read", row.refresh_token)], secrets=f"2:{SECRET_2}"
    ) == [grant.access_token, grant.refresh_token]

    again = await probe_services.engine.run("github", "u1")  # now reading the sealed row
    assert again.status == "ok"
    assert api.unauthorized == 0


async def test_connect_stores_encrypted_tokens(
    better_auth: BetterAuthNode, migrated_sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, _ = oauth
    settings = settings_for(migrated_sqlite_url, oauth).model_copy(
        update={"better_auth_secret": Settings(better_auth_secret=SECRET_OLD).better_auth_secret}
    )
    _, services = await run_flow(settings, "twitter")
    try:
        async with services.db.session() as session:
            row = await find_account(session, "person-1", "twitter")
    finally:
        await services.aclose()
    (grant,) = state.grants.values()
    assert row is not None
    assert row.access_token is not None
    assert row.refresh_token is not None
    assert HEX.fullmatch(row.access_token)
    assert better_auth.values(
        [("read", row.access_token), ("read", row.refresh_token)], secret=SECRET_OLD
    ) == [grant.access_token, grant.refresh_token]


async def test_a_worker_dead_letters_an_unreadable_account_at_once(
    namespace: str,
    redis_url: str,
    migrated_sqlite_url: str,
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No retry storm: the job fails once and is dead-lettered (a configuration error), the
    account is `error` (not `reauth_required`), no token request and no API call are made."""
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    state, url = oauth
    api, api_url = probe
    values: dict[str, Any] = {k.lower(): v for k, v in state.settings_env(url).items()}
    settings = Settings(
        database_url=migrated_sqlite_url,
        github_api_url=api_url,
        redis_url=redis_url,
        redis_namespace=namespace,
        better_auth_secrets=f"2:{SECRET_2}",
        job_max_attempts=5,
        job_retry_base_seconds=0.01,
        job_retry_max_seconds=0.05,
        **values,
    )
    sealed_elsewhere = cipher(None, f"2:{secrets.token_hex(16)}").seal("gho_other")
    await store_raw(settings, "github", sealed_elsewhere, None)
    queue = RedisJobQueue(settings)
    consumer = queue.consumer()
    await consumer.start()
    services = await Services.open(settings, lock=consumer.sync_lock())
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        await queue.enqueue(Job("github", "u1"))
        async with running_worker(settings, consumer, services):

            async def dead() -> list[Any]:
                return list(await redis.xrange(Keys(namespace).dead))

            (entry,) = await wait_for(dead)
            await asyncio.sleep(0.5)  # time for retries, were there any
        runs = await SyncStateStore(services.db).recent_runs(10)
        sync_state = await SyncStateStore(services.db).load("u1", "github")
    finally:
        await services.aclose()
        await queue.aclose()
        await redis.aclose()
    fields = entry[1]
    assert fields["attempts"] == "1"
    assert "version 2 of BETTER_AUTH_SECRETS does not decrypt" in fields["error"]
    assert [r.status for r in runs] == ["error"]
    assert sync_state.status == "error"
    assert state.token_calls("github") == 0
    assert api.requests == 0
