"""Token refresh across processes and the re-authentication cycle, through the CLI.

- 8 `ingestion sync` processes against one PostgreSQL database, one account whose token has
  expired, a token endpoint that rotates refresh tokens. The first refresh is held in flight
  until the 7 other processes are seen waiting for the account row lock: exactly one refresh
  call, all 8 syncs succeed, and the stored refresh token is the live one.
- A revoked grant: the sync fails with `reauth_required` and a clear message (no token in it),
  the worker does not retry the job, the scheduler skips the account, a new `accounts add`
  makes it due again and the next sync sets the status back to ok.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingestion.config import Settings
from ingestion.providers import registry
from ingestion.queue.jobs import Job
from ingestion.queue.local import LocalJobQueue
from ingestion.scheduler import Scheduler
from ingestion.services import Services
from ingestion.storage.accounts import find_account
from ingestion.storage.state import SyncStateStore
from ingestion.worker import Worker, engine_runner
from tests.conftest import INGESTION, run_cli
from tests.emulators.oauth import OAuthState
from tests.tokens_probe import ProbeApi, ProbeProvider

ROOT = Path(__file__).resolve().parents[1]
USER = "dev1"
PAST = "2020-01-01T00:00:00Z"


def cli_env(
    base_env: dict[str, str], oauth: tuple[OAuthState, str], probe_url: str, **extra: str
) -> dict[str, str]:
    state, url = oauth
    env = {**base_env, **state.settings_env(url)}
    env.update(
        GITHUB_API_URL=probe_url,
        INGESTION_PLUGINS="tests.tokens_probe_plugin",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        **extra,
    )
    return env


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def add_account(env: dict[str, str], access: str, refresh: str | None, expires: str) -> None:
    args = ["accounts", "add", "github", "--user", USER, "--access-token", access]
    if refresh:
        args += ["--refresh-token", refresh]
    ok(run_cli(*args, "--expires-at", expires, env=env, cwd=ROOT, timeout=240))


def status_of(env: dict[str, str]) -> dict[str, Any]:
    document = json.loads(ok(run_cli("status", "--json", env=env, cwd=ROOT, timeout=240)).stdout)
    rows = [r for r in document["accounts"] if r["userId"] == USER and r["provider"] == "github"]
    assert len(rows) == 1, document
    return dict(rows[0])


def settings_of(env: dict[str, str], state: OAuthState, oauth_url: str) -> Settings:
    return Settings(
        database_url=env["DATABASE_URL"],
        github_api_url=env["GITHUB_API_URL"],
        job_retry_base_seconds=0,
        **{k.lower(): v for k, v in state.settings_env(oauth_url).items()},
    )


def wait_for_lock_waiters(pg_url: str, count: int, procs: list[subprocess.Popen[str]]) -> int:
    """Poll until `count` sessions wait for the account row lock (or a process ended)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE '%%FROM account%%FOR UPDATE%%'"
    )
    deadline = time.monotonic() + 280
    waiting = 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            row = conn.execute(query).fetchone()
            waiting = int(row[0]) if row else 0
            if waiting >= count:
                break
            time.sleep(0.1)
    return waiting


async def stored_account(settings: Settings) -> Any:
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            return await find_account(session, USER, "github")
    finally:
        await services.aclose()


async def stored_state(settings: Settings) -> Any:
    services = await Services.open(settings)
    try:
        return await SyncStateStore(services.db).load(USER, "github")
    finally:
        await services.aclose()


@pytest.mark.slow
@pytest.mark.timeout(400)  # 8 interpreters start at once: slow on a busy 2-core machine
def test_eight_processes_refresh_one_account_once(
    pg_url: str,
    base_env: dict[str, str],
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, oauth_url = oauth
    api, probe_url = probe
    env = cli_env(base_env, oauth, probe_url, DATABASE_URL=pg_url)
    settings = settings_of(env, state, oauth_url)
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    state.on_token = api.link("octo")
    grant = state.issue("github", "octo")
    api.tokens[grant.access_token] = "octo"
    ok(run_cli("db", "upgrade", env=env, cwd=ROOT, timeout=240))
    # The token has expired; first one sync in-process with a valid token creates the state
    # row, so that the 8 processes only race for the token.
    add_account(env, grant.access_token, grant.refresh_token, PAST)
    asyncio.run(_fresh_then_expired(settings, grant.access_token))
    assert state.token_calls("github") == 0
    # The first refresh is held in flight until the 7 other processes wait for the row lock.
    state.hold_refreshes()
    env["TOKEN_REQUEST_TIMEOUT"] = "300"

    procs = [
        subprocess.Popen(
            [*INGESTION, "sync", "github", "--user", USER, "--json"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        waiting = wait_for_lock_waiters(pg_url, 7, procs)
    finally:
        state.open_gate()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert waiting == 7

    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-2000:]
        assert json.loads(stdout)["status"] == "ok"
    assert state.token_calls("github") == 1
    assert api.unauthorized == 0
    account = asyncio.run(stored_account(settings))
    assert account.refresh_token == grant.refresh_token  # the live, rotated one
    assert account.access_token == grant.access_token
    assert account.access_token_expires_at > datetime.now(UTC) + timedelta(hours=7)
    assert asyncio.run(stored_state(settings)).status == "ok"


async def _fresh_then_expired(settings: Settings, access_token: str) -> None:
    """Sync once with the expiry moved to the future, then put the past expiry back."""
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            account = await find_account(session, USER, "github")
            assert account is not None
            expired_at = account.access_token_expires_at
            account.access_token_expires_at = datetime.now(UTC) + timedelta(hours=1)
        assert (await services.engine.run("github", USER)).status == "ok"
        async with services.db.session() as session:
            account = await find_account(session, USER, "github")
            assert account is not None
            assert account.access_token == access_token
            account.access_token_expires_at = expired_at
    finally:
        await services.aclose()


@pytest.mark.timeout(300)
def test_revoked_grant_reauth_cycle(
    base_env: dict[str, str],
    oauth: tuple[OAuthState, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, oauth_url = oauth
    api, probe_url = probe
    env = cli_env(base_env, oauth, probe_url)
    settings = settings_of(env, state, oauth_url)
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    state.on_token = api.link("octo")
    grant = state.issue("github", "octo")
    revoked_refresh = grant.refresh_token
    assert revoked_refresh is not None
    add_account(env, grant.access_token, revoked_refresh, PAST)
    state.revoke(revoked_refresh)

    # 1. A worker runs the job: reauth_required, acknowledged, not retried, not dead-lettered.
    async def through_worker() -> tuple[dict[str, Any], list[str]]:
        queue = LocalJobQueue()
        services = await Services.open(settings, lock=queue.sync_lock())
        try:
            worker = Worker(settings, queue, engine_runner(services.engine), concurrency=1)
            await queue.enqueue(Job("github", USER))
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            store = SyncStateStore(services.db)
            for _ in range(400):
                if (await store.load(USER, "github")).status == "reauth_required":
                    break
                await asyncio.sleep(0.05)
            for _ in range(100):  # the job is settled, not waiting for a retry
                stats = await queue.stats()
                if stats["length"] == 0 and stats["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await task
            due = await Scheduler(settings, queue, services.db).due_users("github")
            return stats, due
        finally:
            await services.aclose()

    stats, due = asyncio.run(through_worker())
    assert stats["length"] == 0
    assert stats["pending"] == 0
    assert stats["deadLetters"] == 0
    assert state.token_calls("github") == 1  # one refusal, no retry (retry delay is 0)
    assert due == []  # the scheduler skips the account

    # 2. A foreground sync says the same, exits 1, and spends one call, not a loop.
    failed = run_cli("sync", "github", "--user", USER, "--json", env=env, cwd=ROOT, timeout=240)
    assert failed.returncode == 1
    error = json.loads(failed.stdout)["error"]
    assert "needs to be reconnected" in error
    assert "bad_refresh_token" in error
    assert "ingestion connect" in error
    assert state.token_calls("github") == 2
    view = asyncio.run(stored_state(settings))
    assert view.status == "reauth_required"
    assert view.last_error == error
    for secret in (revoked_refresh, grant.access_token, "github-secret"):
        assert secret not in failed.stdout + failed.stderr

    # 3. A new `accounts add` changes the fingerprint: due again; the next sync sets ok.
    fresh = state.issue("github", "octo")
    api.tokens[fresh.access_token] = "octo"
    add_account(env, fresh.access_token, fresh.refresh_token, "2099-01-01T00:00:00Z")

    async def due_now() -> list[str]:
        services = await Services.open(settings)
        try:
            return await Scheduler(settings, LocalJobQueue(), services.db).due_users("github")
        finally:
            await services.aclose()

    assert asyncio.run(due_now()) == [USER]
    synced = run_cli("sync", "github", "--user", USER, "--json", env=env, cwd=ROOT, timeout=240)
    assert synced.returncode == 0, synced.stderr[-2000:]
    assert json.loads(synced.stdout)["status"] == "ok"
    row = status_of(env)
    assert row["status"] == "ok"
    assert not row["lastError"]
